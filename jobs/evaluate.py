"""`python -m jobs.evaluate --config ... (--model-dir DIR | --popularity) [--split valid|test]`: same as
`rdistill evaluate`."""

from jobs._entry import run_command

if __name__ == "__main__":
    run_command("evaluate")
