// rectrain-retrieval: retrieval training with negative sampling (cli.hpp).

#include "cli.hpp"

int main(int argc, char** argv) { return retrieval::cli_main(argc, argv); }
