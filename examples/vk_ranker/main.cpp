// rectrain-vk: the VK RecSys Challenge 2024 recipe, end to end (cli.hpp).

#include "cli.hpp"

int main(int argc, char** argv) { return vk::cli_main(argc, argv); }
