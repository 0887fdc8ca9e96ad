"""python -m bench: the benchmark dashboard (see bench/dashboard.py)."""

from bench.dashboard import main

if __name__ == "__main__":
    main()
