"""Command-line parsing: global options are accepted before or after the subcommand."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import _parser


@pytest.mark.parametrize(
    "argv",
    [
        [
            "--config",
            "f.toml",
            "--log-level",
            "DEBUG",
            "--log-format",
            "json",
            "join",
            "--room",
            "x",
        ],
        [
            "join",
            "--room",
            "x",
            "--config",
            "f.toml",
            "--log-level",
            "DEBUG",
            "--log-format",
            "json",
        ],
        [
            "--config",
            "f.toml",
            "join",
            "--room",
            "x",
            "--log-level",
            "DEBUG",
            "--log-format",
            "json",
        ],
    ],
)
def test_global_options_go_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert (args.command, args.room) == ("join", "x")
    assert (args.config, args.log_level, args.log_format) == (Path("f.toml"), "DEBUG", "json")


def test_unset_global_options_stay_unset() -> None:
    args = _parser().parse_args(["dev"])
    assert (args.config, args.log_level, args.log_format) == (None, None, None)
    assert (args.no_human, args.page_port, args.turns) == (False, 8788, 3)


def test_a_bad_option_after_the_subcommand_is_still_refused() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--log-level", "LOUD"])


@pytest.mark.parametrize("room", ["", "   ", "r" * 257])
def test_a_room_name_livekit_cannot_take_is_refused_by_the_parser(
    room: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["join", "--room", room])
    assert exited.value.code == 2
    assert "argument --room: a room name is 1 to 256 characters" in capsys.readouterr().err
