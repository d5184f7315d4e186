"""drox.errors.first_line: the one line a user sees for an exception; every expected string written by hand."""

from __future__ import annotations

from drox.errors import first_line


def chained(message: str, cause: BaseException) -> BaseException:
    try:
        raise ValueError(message) from cause
    except ValueError as e:
        return e


def test_first_line_of_the_message_then_the_cause():
    e = chained("bad override\nsecond line", KeyError("trainer.foo"))
    assert first_line(e) == "bad override ('trainer.foo')"
    assert first_line(e, with_cause=False) == "bad override"
    assert first_line(e, with_type=True) == "ValueError: bad override ('trainer.foo')"


def test_empty_messages_fall_back_to_the_type_name():
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(RuntimeError("  "), with_type=True) == "RuntimeError"  # not "RuntimeError: RuntimeError"
    assert first_line(chained("", OSError("disk\nfull"))) == "ValueError (disk)"
    assert first_line(chained("x", OSError(""))) == "x"  # a cause without a message adds nothing
