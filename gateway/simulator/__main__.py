"""``python -m gateway.simulator``: the simulator's command line."""

from gateway.simulator.command import main

if __name__ == "__main__":
    raise SystemExit(main())
