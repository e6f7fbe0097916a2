#pragma once
// rectrain-vk's program as a function: main.cpp calls it, and the test suite
// runs it inside its own process (tests/vk_in_process.hpp), without the
// second or more that starting a LibTorch program costs.

namespace vk {

/// Parses `argv` (argv[0] is the program's name), runs the subcommand, and
/// returns the exit status: 0; 1 for an error, printed as one line; 2 for a
/// usage error. The process-wide settings it makes (threads, durable
/// writes, protected inputs) are set again by every call.
int cli_main(int argc, char** argv);

} // namespace vk
