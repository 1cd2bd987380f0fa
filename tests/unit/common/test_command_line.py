"""Command lines: --help lists the settings a command reads, with README's words, and errors
are one line."""

from __future__ import annotations

import pytest

from common import command_line
from common.command_line import (
    CommandParser,
    documented,
    readme_text,
    settings_help,
    variables_read,
)
from common.kafka import KafkaSettings
from consumers.metrics.settings import MetricsSettings
from consumers.settings import ProcessorSettings
from ingest.settings import EdgeSettings

README = """
Some prose with `NOT_A_SETTING`.

| variable | default | meaning |
|---|---|---|
| `ALPHA_HOST`, `ALPHA_PORT` | `127.0.0.1`, `8080` | where it listens (see [docs](docs/x.md)) |
| `BETA_PARTITIONS` | `6` | partitions (per topic: `BETA_RAW_PARTITIONS`) |
| `GAMMA_SECRET` | | **required** with SASL |

| path | what |
|---|---|
| `ingest/` | the edge |
"""


def test_rows_come_from_settings_tables_only_as_plain_text() -> None:
    """Each row's variables, default and meaning, without markdown; other tables are not
    settings."""
    rows = documented(README)

    assert [row.names for row in rows] == [
        ("ALPHA_HOST", "ALPHA_PORT"),
        ("BETA_PARTITIONS",),
        ("GAMMA_SECRET",),
    ]
    assert rows[0].default == "127.0.0.1, 8080"
    assert rows[0].meaning == "where it listens (see docs)"
    assert rows[2].meaning == "required with SASL"


def test_help_lists_the_rows_of_the_variables_read_and_names_the_rest() -> None:
    """A row is shown when it names a variable read, or mentions a per-topic variant of it;
    a variable no row documents is still listed."""
    text = settings_help(["BETA_RAW_PARTITIONS", "ALPHA_PORT", "DELTA"], README)

    assert "  ALPHA_HOST, ALPHA_PORT  [default 127.0.0.1, 8080]" in text.splitlines()
    assert "  BETA_PARTITIONS  [default 6]" in text.splitlines()
    assert "GAMMA_SECRET" not in text
    assert text.splitlines()[-1] == "  also: DELTA"


def test_every_optional_branch_of_the_settings_is_read() -> None:
    """SASL credentials are read only with a SASL protocol: the probe turns it on."""
    names = variables_read(KafkaSettings.from_environ)

    assert names[0] == "KAFKA_BOOTSTRAP_SERVERS"
    assert {"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} <= set(names)
    assert "KAFKA_SSL_CAFILE" in names


@pytest.mark.parametrize(
    "build",
    [EdgeSettings.from_environ, ProcessorSettings.from_environ, MetricsSettings.from_environ],
)
def test_the_readme_documents_every_variable_a_service_reads(build: object) -> None:
    """No setting without a README row (so no --help line without a meaning)."""
    text = settings_help(variables_read(build))  # type: ignore[arg-type]

    assert "also:" not in text
    assert "LOG_FORMAT" in text


def test_an_installed_package_reads_the_readme_from_its_metadata(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """In the image there is no checkout: the distribution's long description is README."""
    monkeypatch.setattr(command_line, "CHECKOUT", tmp_path)

    assert "| `KAFKA_BOOTSTRAP_SERVERS` |" in readme_text()


def test_a_parser_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors print one line that names the fault and where to look, then exit 2."""
    parser = CommandParser(prog="postback-pipeline thing")
    parser.add_argument("--count", type=int)

    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--count", "many"])

    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "postback-pipeline thing: error: argument --count: invalid int value: 'many' "
        "(see postback-pipeline thing --help)\n"
    )
