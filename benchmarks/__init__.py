"""The benchmarks behind docs/benchmarks/ and the speed figures of docs/RESULTS.md.

Each is a module of this package, run from the repository root, for example
`python -m benchmarks.huge_k --quick`: the modules share helpers by package imports
(`benchmarks._machine`), and a benchmark that measures in fresh processes starts them the same
way ([`run_module`][benchmarks._invocation.run_module]).
"""
