#!/usr/bin/python3
"""Parses a Prometheus text-format page (stdin) with prometheus_client's own parser and
prints what it read as JSON: {family: {"type": t, "samples": [[name, labels, value]]}}.
Exits 1 with the parser's message when the page does not parse. Used by the C++ tests
(tests/observe/, tests/integration/) to check /metrics against a real parser."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = {}
    try:
        for family in text_string_to_metric_families(text):
            samples = []
            for s in family.samples:
                value = s.value
                if math.isnan(value) or math.isinf(value):
                    value = str(value)
                samples.append([s.name, dict(s.labels), value])
            families[family.name] = {"type": family.type, "help": family.documentation, "samples": samples}
    except Exception as e:  # the parser raises ValueError and others on a bad page
        print(f"parse error: {e!r}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
