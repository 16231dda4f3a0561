"""Reads OpenMetrics text on stdin with prometheus_client's own parser (the
real thing, not ours) and prints every sample as one JSON list of
{"name", "labels", "value"}: a text the parser refuses fails here."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": sample.name,
                        "labels": sample.labels, "value": sample.value})
json.dump(samples, sys.stdout)
