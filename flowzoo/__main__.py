"""`python -m flowzoo ...` (what torchrun runs: torchrun --nproc_per_node=8 -m flowzoo run ...)."""

from flowzoo.cli import main

main()
