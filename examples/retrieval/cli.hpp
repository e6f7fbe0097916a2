#pragma once
// rectrain-retrieval's program as a function: main.cpp calls it, and the
// test suite runs it in its own process (tests/retrieval_in_process.hpp).

namespace retrieval {

/// Parses `argv`, runs the subcommand, returns the exit status: 0; 1 for
/// an error (one line); 2 for a usage error.
int cli_main(int argc, char** argv);

} // namespace retrieval
