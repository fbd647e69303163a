"""The `odyssey` command line (`odyssey.cli`), above study, analysis and benchmarks."""
