#pragma once
// The benchmark programs, all in one executable (main.cpp): each is run by
// its own name, a link to it, as a separate program would be.

int csv_bench_main(int argc, char** argv);
int sampler_bench_main(int argc, char** argv);
int pipeline_bench_main(int argc, char** argv);
int als_bench_main(int argc, char** argv);
int model_bench_main(int argc, char** argv);
int dist_bench_main(int argc, char** argv);
int retrieval_bench_main(int argc, char** argv);
