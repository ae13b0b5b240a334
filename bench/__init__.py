"""rnnsuite's benchmark suite: speed side by side with reference implementations.

`python -m bench.run --profile quick|full` (`make bench-quick`, `make bench`) runs every
section in a fresh process and writes `bench/results/<timestamp>.json` and `.md`;
`python -m bench.report` renders a results file and updates README's benchmark section.
See bench/README.md for what each number means.
"""
