"""Command line: ``python -m fastconv bench [options]`` and ``python -m fastconv config``."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m fastconv {bench,config} [options]\n"
              "  bench   time fastconv against NumPy, PyTorch, SciPy, OpenCV (--help for options)\n"
              "  config  print the build and runtime configuration")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from fastconv.benchmarks.runner import main as bench_main
        return bench_main(rest)
    if command == "config":
        import fastconv
        fastconv.show_config()
        return 0
    print(f"unknown command {command!r}; expected 'bench' or 'config'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
