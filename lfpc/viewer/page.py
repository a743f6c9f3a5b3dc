"""The static HTML report: an overview table, filters, and one card per trajectory with images (the global view
with predicted and GT boxes drawn, the returned crops, the decoded turns, invalid calls, rewards, advantage).
Images are embedded as data URIs, so the single file opens from disk without a server or network."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path

from lfpc.agent.env import MODES
from lfpc.viewer.assets import SCRIPT, STYLE
from lfpc.viewer.load import Report, data_uri, is_correct, stats

FILTERS = {"outcome": ("correct", "wrong"), "crops": ("with", "without"), "invalid": ("with", "without")}
THUMBNAILS_PER_STEP = 8


def fmt(value) -> str:
    """A number with 3 significant digits ('-' for None), anything else as escaped text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3g}" if isinstance(value, float) else escape(str(value))


def rect(box, cls: str, label: str = "") -> str:
    """An SVG rectangle over ``box`` (corners in any order, so a refused reversed box is still drawn)."""
    x1, x2 = sorted(box[0::2])
    y1, y2 = sorted(box[1::2])
    return (f'<rect class="{cls}" x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}">'
            f"<title>{escape(label)}</title></rect>")  # numbers only: records are checked on load


def global_view(record: dict, folder: Path) -> str:
    """The global view as the model saw it, GT boxes (green), predicted crops (red, numbered) and refused
    tool calls (orange, dashed) drawn in the displayed frame."""
    width, height = record["display_size"]
    shapes = [rect(b, "gt", "GT box") for b in record["gt_boxes_display"]]
    crops = 0
    for event in record["events"]:
        if event["kind"] != "tool_call" or not event.get("bbox"):
            continue
        if event.get("box") is None:
            shapes.append(rect(event["bbox"], "invalid", f"turn {event['turn']}: {event['error']}"))
            continue
        crops += 1
        x1, y1 = event["bbox"][:2]
        shapes.append(rect(event["bbox"], "pred", f"crop {crops} (turn {event['turn']})"))
        shapes.append(f'<text x="{max(x1, 0):.1f}" y="{max(y1, 0) + max(width, height) / 16:.1f}" '
                      f'font-size="{max(width, height) / 16:.1f}">{crops}</text>')
    uri = data_uri(folder, record["images"]["global"])
    image = f'<img class="global" src="{uri}" alt="global view">' if uri else ""
    return (f'<div class="view" style="aspect-ratio: {width:g} / {height:g}">{image}'
            f'<svg viewBox="0 0 {width:g} {height:g}" preserveAspectRatio="none">{"".join(shapes)}</svg></div>')


def crop_figures(record: dict, folder: Path) -> str:
    """Each returned crop with the turn, its box (displayed and original frame) and its size."""
    crop_events = [e for e in record["events"] if e.get("box") is not None]
    figures = []
    for event, path in zip(crop_events, record["images"]["crops"]):
        uri = data_uri(folder, path)
        if uri is None:
            continue
        caption = (f"turn {event['turn']}: bbox {fmt(event['bbox'])} -> original {fmt(event['box'])}, "
                   f"crop {event['crop_size'][0]:g}x{event['crop_size'][1]:g} px")
        figures.append(f'<figure><img class="crop" src="{uri}" alt="crop"><figcaption>{caption}</figcaption>'
                       "</figure>")
    return f'<div class="crops">{"".join(figures)}</div>'


def turns_block(record: dict) -> str:
    """Each decoded assistant turn with what the environment made of it (errors in red)."""
    parts = []
    for text, event in zip(record["turns"], record["events"]):
        error = f'<div class="error">invalid: {escape(event["error"])}</div>' if event.get("error") else ""
        parts.append(f"<div>turn {event['turn']:d} ({escape(event['kind'])})<pre>{escape(text)}</pre>{error}</div>")
    return f"<details><summary>{len(record['turns'])} turns</summary>{''.join(parts)}</details>"


def scores_block(record: dict) -> str:
    """Reward terms and the group advantage (training) or correctness and format (evaluation)."""
    if "scores" in record:
        terms = {k: record["scores"][k] for k in ("acc", "fmt", "tool", "iou", "l1", "total")}
        terms["advantage"] = record["advantage"]
    else:
        terms = {"correct": record["correct"], "format ok": record["format_ok"],
                 "visual tokens": record["visual_tokens"]}
    cells = "".join(f"<th>{escape(k)}</th>" for k in terms) + "</tr><tr>" + "".join(
        f"<td>{fmt(v)}</td>" for v in terms.values())
    return f'<table class="scores"><tr>{cells}</tr></table>'


def card(record: dict, folder: Path, anchor: str, title: str) -> str:
    """One trajectory."""
    correct = is_correct(record)
    data = {"outcome": "correct" if correct else "wrong", "crops": "with" if record["crop_boxes"] else "without",
            "invalid": "with" if record["invalid_calls"] else "without"}
    attributes = " ".join(f'data-{k}="{v}"' for k, v in data.items())
    invalid = [e for e in record["events"] if e.get("error")]
    invalid_html = "".join(f'<div class="error">turn {e["turn"]:d}: {escape(e["error"])}</div>' for e in invalid)
    return (f'<div class="traj {data["outcome"]}" id="{anchor}" {attributes}>'
            f"<b>{escape(title)}</b> &middot; {'correct' if correct else 'wrong'} &middot; "
            f"answer {fmt(record['prediction'])} (GT {fmt(record['answer'])})"
            f"{global_view(record, folder)}{crop_figures(record, folder)}{scores_block(record)}{invalid_html}"
            f"{turns_block(record)}</div>")


def question_header(record: dict) -> str:
    """The question, its options and the GT answer."""
    options = " ".join(f"({chr(65 + i)}) {escape(o)}" for i, o in enumerate(record["options"]))
    return f"<p>{escape(record['question'])}<br>{options}<br>GT answer: {escape(record['answer'])}</p>"


def overview(rows: list[tuple[str, list[dict], list[tuple[str, dict]]]], folder: Path, label: str) -> str:
    """The overview table: one row per step (or evaluation pass) with its statistics and thumbnails."""
    head = (f"<tr><th>{label}</th><th>trajectories</th><th>reward</th><th>accuracy</th><th>tool-call rate</th>"
            "<th>invalid-call rate</th><th>IoU</th><th>thumbnails</th></tr>")
    body = []
    for name, records, cards in rows:
        s = stats(records)
        uris = (data_uri(folder, r["images"]["global"]) for _, r in cards[:THUMBNAILS_PER_STEP])
        thumbs = "".join(f'<a href="#{anchor}"><img class="thumb" src="{uri}" alt="thumbnail"></a>'
                         for (anchor, _), uri in zip(cards, uris) if uri)
        body.append(f"<tr><td>{escape(name)}</td><td>{s['n']}</td><td>{fmt(s['reward'])}</td><td>{fmt(s['acc'])}</td>"
                    f"<td>{fmt(s['tool_call_rate'])}</td><td>{fmt(s['invalid_call_rate'])}</td>"
                    f"<td>{fmt(s['iou'])}</td><td>{thumbs}</td></tr>")
    return f'<table class="overview">{head}{"".join(body)}</table>'


def group_block(cards: list[tuple[str, dict]], folder: Path) -> str:
    """One GRPO group's kept rollouts (anchor, record) under its question."""
    first = cards[0][1]
    rollouts = "".join(card(r, folder, anchor, f"rollout {i}") for i, (anchor, r) in enumerate(cards))
    return (f'<h3>rank {first["rank"]:d}, group {first["group"]:d}: {escape(first["sample_id"])}</h3>'
            f'{question_header(first)}<div class="cards">{rollouts}</div>')


def training_body(report: Report) -> tuple[str, int]:
    """Overview by step, then each step's kept trajectories by GRPO group (with the question and advantages)."""
    steps: dict[int, list[dict]] = defaultdict(list)
    for record in report.records:
        steps[record["step"]].append(record)
    rows, sections, total = [], [], 0
    for step, records in sorted(steps.items()):
        kept = [(f"s{step}-{i}", r) for i, r in enumerate(r for r in records if "images" in r)]
        total += len(kept)
        rows.append((str(step), records, kept))
        groups: dict[tuple[int, int], list[tuple[str, dict]]] = defaultdict(list)
        for anchor, record in kept:
            groups[(record["rank"], record["group"])].append((anchor, record))
        blocks = "".join(group_block(cards, report.folder) for cards in groups.values())
        sections.append(f'<section class="group"><h2>step {step}</h2>{blocks}</section>')
    return overview(rows, report.folder, "step") + "".join(sections), total


def mode_order(mode: str) -> int:
    """Crop modes in the order pred, gt, noise, direct."""
    return MODES.index(mode) if mode in MODES else len(MODES)


def evaluation_body(report: Report) -> tuple[str, int]:
    """Overview by (budget, mode), then each question with thumbnails, its crop modes side by side."""
    passes: dict[tuple[int, int], list[dict]] = defaultdict(list)
    questions: dict[str, list[dict]] = defaultdict(list)
    for record in report.records:
        passes[(record["budget"], mode_order(record["mode"]))].append(record)
        if "images" in record:
            questions[record["id"]].append(record)
    rows, sections, total = [], [], 0
    for index, (qid, records) in enumerate(questions.items()):
        records.sort(key=lambda r: (r["budget"], mode_order(r["mode"])))
        by_budget: dict[int, list[str]] = defaultdict(list)
        for i, r in enumerate(records):
            title = f"{r['mode']} @ {r['budget']} tokens"
            by_budget[r["budget"]].append(card(r, report.folder, f"q{index}-{i}", title))
        total += len(records)
        rows_html = "".join(f'<div class="cards side-by-side">{"".join(cards)}</div>' for cards in by_budget.values())
        sections.append(f'<section class="group question"><h2>{escape(qid)}</h2>{question_header(records[0])}'
                        f"{rows_html}</section>")
    anchors = {id(r): f"q{q}-{i}" for q, records in enumerate(questions.values()) for i, r in enumerate(records)}
    for (budget, _), records in sorted(passes.items()):
        kept = [(anchors[id(r)], r) for r in records if id(r) in anchors]
        rows.append((f"{records[0]['mode']} @ {budget}", records, kept))
    return overview(rows, report.folder, "mode @ budget") + "".join(sections), total


def render(report: Report) -> str:
    """The whole page of ``report``."""
    body, total = (training_body if report.kind == "training" else evaluation_body)(report)
    selects = "".join(f'<label>{name} <select name="{name}"><option>all</option>'
                      + "".join(f"<option>{v}</option>" for v in values) + "</select></label> "
                      for name, values in FILTERS.items())
    legend = ('<span class="legend"><span class="pred">&#9632; predicted crop</span> '
              '<span class="gt">&#9632; GT box</span> <span class="invalid">&#9632; refused call</span></span>')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>LFPC {report.kind} trajectories</title>'
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>{report.kind.capitalize()} trajectories: {escape(str(report.folder))}</h1>"
            f"<p>{len(report.records)} trajectories logged, {total} with images.</p>"
            f'<div id="filters">{selects} showing <span id="shown"></span> of {total} {legend}</div>'
            f"{body}</body></html>")
