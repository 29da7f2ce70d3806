"""docs/handlers.md's example payloads are accepted by the handlers they document."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jobd.samples import files, mail, report

DOC = Path(__file__).resolve().parents[2] / "docs" / "handlers.md"


def test_the_example_payloads_pass_their_validators() -> None:
    text = DOC.read_text(encoding="utf-8")
    examples = {}
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        if not section.startswith("`"):
            continue  # not a sample handler's section
        name = section.split("`")[1]
        examples[name] = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.S)]
    assert set(examples) == {"send_email", "generate_report", "process_file"}
    validators = {
        "send_email": mail.check_email,
        "generate_report": report.check_spec,
        "process_file": files.check_task,
    }
    for name, payloads in examples.items():
        assert payloads, f"no example payload for {name}"
        for payload in payloads:
            validators[name](payload)
