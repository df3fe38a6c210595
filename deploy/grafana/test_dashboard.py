#!/usr/bin/env python3
"""Checks deploy/grafana/reelay-dashboard.json against the metrics catalogue.

    python3 deploy/grafana/test_dashboard.py            # the dashboard and the alert rules
    REELAY_METRICS_FILES="a.txt b.txt" python3 ...      # also: scraped pages match the catalogue

The catalogue is the tables of docs/operations.md ("Metrics catalogue"): every line
`| `reelay_...` | type | ...`. Standard library only (PyYAML, when installed, adds the check of
the alert rules' expressions).
"""

import json
import os
import re
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "reelay-dashboard.json"
CATALOGUE = ROOT / "docs" / "operations.md"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "reelay.rules.yml"

METRIC_ROW = re.compile(r"^\|\s*`(reelay_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|")
NAME = re.compile(r"\breelay_[a-zA-Z0-9_:]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def catalogue():
    """{metric name: type} from the tables of docs/operations.md."""
    out = {}
    in_section = False
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_section = line.strip() == "## Metrics catalogue"
            continue
        m = METRIC_ROW.match(line)
        if in_section and m:
            out[m.group(1)] = m.group(2)
    return out


def resolve(name, cat):
    """The catalogue metric a series name belongs to (histogram suffixes allowed), or None."""
    if name in cat:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and cat.get(base) in ("histogram", "summary"):
            return base
    return None


def panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cat = catalogue()
        with DASHBOARD.open(encoding="utf-8") as f:
            cls.dash = json.load(f)

    def test_catalogue_is_readable(self):
        self.assertGreaterEqual(len(self.cat), 20, self.cat)
        self.assertEqual(self.cat.get("reelay_queue_depth"), "gauge")
        self.assertEqual(self.cat.get("reelay_edge_reload_duration_seconds"), "histogram")

    def test_importable_as_is(self):
        d = self.dash
        inputs = d.get("__inputs", [])
        self.assertTrue(
            any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource"
                and i.get("pluginId") == "prometheus" for i in inputs),
            "needs a DS_PROMETHEUS datasource input",
        )
        self.assertIsNone(d.get("id"), "an exported dashboard has id null")
        self.assertTrue(d.get("uid") and d.get("title"))
        self.assertIsInstance(d.get("schemaVersion"), int)
        ids = [p["id"] for p in panels(d)]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        for p in panels(d):
            g = p.get("gridPos", {})
            for k in ("x", "y", "w", "h"):
                self.assertIsInstance(g.get(k), int, f"panel {p.get('title')}: gridPos.{k}")
            self.assertLessEqual(g["x"] + g["w"], 24, p.get("title"))
            if p.get("type") == "row":
                continue
            self.assertEqual(p.get("datasource", {}).get("uid"), "${DS_PROMETHEUS}", p.get("title"))
            self.assertTrue(p.get("targets"), f"panel {p.get('title')} has no query")
            for t in p["targets"]:
                self.assertEqual(t.get("datasource", {}).get("uid"), "${DS_PROMETHEUS}", p.get("title"))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                self.assertEqual(v.get("datasource", {}).get("uid"), "${DS_PROMETHEUS}")
        # Nothing may point at a data source of the exporting Grafana.
        text = DASHBOARD.read_text(encoding="utf-8")
        uids = set(re.findall(r'"uid":\s*"([^"]*)"', text))
        self.assertLessEqual(uids, {"${DS_PROMETHEUS}", "-- Grafana --", self.dash["uid"]}, uids)

    def test_every_query_uses_catalogued_metrics(self):
        exprs = [(p["title"], t["expr"]) for p in panels(self.dash) for t in p.get("targets", [])]
        self.assertGreater(len(exprs), 10)
        for title, expr in exprs:
            names = NAME.findall(expr)
            self.assertTrue(names, f"{title}: {expr} names no reelay metric")
            for n in names:
                self.assertIsNotNone(resolve(n, self.cat), f"{title}: {n} is not in docs/operations.md")
                base = resolve(n, self.cat)
                if self.cat[base] == "histogram":
                    self.assertTrue(n.endswith(HISTOGRAM_SUFFIXES), f"{title}: use {n}_bucket/_sum/_count")
                if self.cat[base] == "counter":
                    self.assertRegex(expr, r"(rate|increase)\(\s*" + re.escape(n),
                                     f"{title}: counter {n} should be rated")

    def test_required_topics_are_covered(self):
        used = {resolve(n, self.cat) for p in panels(self.dash) for t in p.get("targets", [])
                for n in NAME.findall(t["expr"])}
        for topic, metric in [
            ("queue depth", "reelay_queue_depth"),
            ("throughput", "reelay_jobs_finished_total"),
            ("encode speed", "reelay_encode_speed_ratio"),
            ("failures", "reelay_jobs_finished_total"),
            ("per-cloud health", "reelay_edge_cluster_up"),
            ("placements", "reelay_edge_placements_total"),
            ("latency", "reelay_http_request_duration_seconds"),
            ("edge reloads", "reelay_edge_reload_failures_total"),
        ]:
            self.assertIn(metric, used, f"no panel about {topic}")

    def test_alert_rules_use_catalogued_metrics(self):
        try:
            import yaml  # noqa: PLC0415
        except ImportError:
            self.skipTest("PyYAML not installed")
        rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
        count = 0
        for g in rules["groups"]:
            for r in g["rules"]:
                count += 1
                for n in NAME.findall(r["expr"]):
                    self.assertIsNotNone(resolve(n, self.cat), f"{r.get('alert')}: {n} not in the catalogue")
        self.assertGreaterEqual(count, 5)


class ScrapedPagesTest(unittest.TestCase):
    """With REELAY_METRICS_FILES: the catalogue and what the processes expose agree."""

    def setUp(self):
        files = os.environ.get("REELAY_METRICS_FILES", "").split()
        if not files:
            self.skipTest("REELAY_METRICS_FILES not set")
        self.exposed = {}
        for f in files:
            for line in Path(f).read_text(encoding="utf-8").splitlines():
                m = re.match(r"# TYPE (\S+) (\S+)", line)
                if m:
                    self.exposed[m.group(1)] = m.group(2)
        self.cat = catalogue()

    def test_every_exposed_metric_is_catalogued_with_its_type(self):
        for name, kind in self.exposed.items():
            if not name.startswith("reelay_"):
                continue
            self.assertIn(name, self.cat, f"{name} is exposed but not in docs/operations.md")
            self.assertEqual(self.cat[name], kind, f"{name}: documented as {self.cat[name]}, exposed as {kind}")

    def test_every_catalogued_metric_is_exposed(self):
        missing = sorted(set(self.cat) - set(self.exposed))
        self.assertEqual(missing, [], "catalogued but not exposed after a job")


if __name__ == "__main__":
    unittest.main(verbosity=2)
