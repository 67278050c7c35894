from pairless.cli import run

# `python -m pairless ...` (and torchrun): the command's exit code becomes the process's
if __name__ == "__main__":
    run()
