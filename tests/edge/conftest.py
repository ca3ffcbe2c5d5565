from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "paddy-edge.toml"


def example_config_text(
    *, port: int = 1883, outbox: Path | None = None, warmup_s: float = 0, **rule: float
) -> str:
    """The shipped example config, pointed at a local broker and a test outbox."""
    text = EXAMPLE.read_text()
    text = text.replace('host = "broker.example.jp"', 'host = "127.0.0.1"')
    text = text.replace("port = 1883", f"port = {port}")
    if outbox is not None:
        text = text.replace("/var/lib/satoyama/outbox.sqlite3", str(outbox))
    text = text.replace("warmup_s = 60 ", f"warmup_s = {warmup_s} ")
    for key, value in rule.items():
        text = "\n".join(
            f"{key} = {value}" if line.split("=")[0].strip() == key else line
            for line in text.splitlines()
        )
    return text
