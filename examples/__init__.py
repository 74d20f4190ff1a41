"""Examples that the README shows and the tests run."""
