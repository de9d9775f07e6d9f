"""Bad input."""


def main(per_subject: int, seed: int) -> int:
    """Placeholder."""
    raise NotImplementedError
