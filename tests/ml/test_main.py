"""``python -m ml``: the command list prints (every command named, with its line of help)."""

import pytest

from ml.__main__ import COMMANDS, main


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]])
def test_the_command_list_prints_with_every_command(argv, capsys):
    main(argv)
    out = capsys.readouterr().out
    assert "usage: python -m ml" in out
    for name in COMMANDS:
        assert name in out
    assert "93%/94%" in out  # a literal % in a help line (argparse %-formats them)


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2 and "invalid choice: 'nonsense'" in capsys.readouterr().err
