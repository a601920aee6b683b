"""The documents stay true: every flag, state topic and metric is written down."""

import os

from networkd import metrics
from networkd.bus.messages import STATE_TOPICS
from networkd.config import FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_every_flag_is_in_operations_and_the_man_page() -> None:
    operations, man = read("docs/OPERATIONS.md"), read("docs/networkd.8")
    for flag in FLAGS:
        assert f"`-{flag}`" in operations, flag
        assert flag.replace("-", "\\-") in man or flag in man, flag


def test_every_state_topic_is_in_the_architecture() -> None:
    architecture = read("docs/ARCHITECTURE.md")
    for topic in STATE_TOPICS:
        assert f"`{topic}`" in architecture, topic


def test_every_metric_is_in_operations() -> None:
    operations = read("docs/OPERATIONS.md")
    for family in metrics.families(lambda sender, topic: None, []):
        assert family.name in operations, family.name


def test_readme_opens_with_the_two_commands() -> None:
    lines = [line for line in read("README.md").splitlines() if line.strip()]
    commands = [line.split("#")[0].strip() for line in lines[1:6] if line.startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]
