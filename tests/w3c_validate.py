"""Run the W3C feed validator (github.com/w3c/feedvalidator) on local files, offline.

Invoked by tests/test_w3c_validator.py with the validator's own Python:
    python w3c_validate.py VALIDATOR_DIR BASE_URL FILE
Prints one line per error or warning (`error|warning TypeName line: message`); exit 1 on
any error. The validator is never vendored here: point FEEDVALIDATOR at a checkout.
"""

import socket
import sys


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network disabled while validating")


# validateStream itself reads no URLs, but an e-mail check may resolve a host name.
for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
    setattr(socket, _name, _no_network)


def main() -> int:
    validator_dir, base, path = sys.argv[1:4]
    sys.path.insert(0, f"{validator_dir}/src")
    import feedvalidator  # type: ignore[import-not-found]
    from feedvalidator import compatibility
    from feedvalidator.formatter.text_plain import Formatter  # type: ignore[import-not-found]
    from feedvalidator.logging import Error, ValidationFailure  # type: ignore[import-not-found]

    with open(path, "rb") as stream:
        try:
            events = feedvalidator.validateStream(stream, firstOccurrenceOnly=0, base=base)[
                "loggedEvents"
            ]
        except ValidationFailure as failure:
            events = [failure.event]
    events = compatibility.AA(events)  # what the online validator shows
    formatter = Formatter([])
    errors = 0
    for event in events:
        level = "error" if isinstance(event, Error) else "warning"
        errors += level == "error"
        line = event.params.get("line", "?")
        print(f"{level} {type(event).__name__} {line}: {formatter.getMessage(event)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
