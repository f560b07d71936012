"""The style and the script inlined into report/index.html (factory.commands.page): plain CSS and
vanilla JavaScript, no library, nothing fetched. The script reads the JSON of `#page-data` and only
ever sets text (textContent, createElement): model text is never parsed as HTML."""

CSS = """
:root{--fg:#1d2230;--mute:#5d6575;--line:#dde1e8;--bg:#f6f7f9;--ok:#1f7a4d;--bad:#a33a3a;--accent:#2f5bd3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);padding:8px 20px}
header h1{font-size:17px;margin:0 0 4px;overflow-wrap:anywhere}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;font-size:13px}
main{max-width:1400px;margin:0 auto;padding:8px 20px 60px}
section{scroll-margin-top:64px;background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:2px 0 8px}h3{font-size:14px;margin:14px 0 6px}
.note{color:var(--mute);font-size:12.5px;margin:4px 0}
.warn{background:#fff4d6;border:1px solid #f0d48a;padding:6px 10px;border-radius:6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.kv td:first-child{color:var(--mute);white-space:nowrap}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:8px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:140px}
.card .v{font-size:19px;font-weight:600}.card .k{color:var(--mute);font-size:12px}
.funnel .step{display:grid;grid-template-columns:220px minmax(200px,1fr) minmax(200px,1.2fr);gap:10px;align-items:center;margin:3px 0}
.funnel .label{text-align:right;color:var(--mute)}
.funnel .bar{position:relative;height:22px;background:#eef0f4;border-radius:4px}
.funnel .bar span{position:absolute;left:0;top:0;bottom:0;background:#8fb0ef;border-radius:4px}
.funnel .bar b{position:relative;padding-left:6px;line-height:22px;font-variant-numeric:tabular-nums}
.funnel .lost{display:inline-block;margin:1px 6px 1px 0;padding:0 6px;border-radius:10px;background:#fbe9e9;color:var(--bad);font-size:12px}
.row{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;width:420px;max-width:100%}
.plots img,.plots svg{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff}
figcaption{color:var(--mute);font-size:12px;text-align:center}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:6px 0}
.controls input[type=search]{min-width:320px}
input,select,button{font:inherit;padding:3px 6px;border:1px solid #c5cad3;border-radius:5px;background:#fff}
button{cursor:pointer}button:disabled{opacity:.4;cursor:default}
.count{margin:4px 0;font-weight:600}.pager{display:flex;gap:8px;align-items:center;margin:6px 0}
.item{border:1px solid var(--line);border-radius:8px;margin:10px 0;padding:8px 10px}
.item-head{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-bottom:6px}
.chip{display:inline-block;padding:0 7px;border-radius:10px;background:#eef0f4;font-size:12px;color:#333}
.chip.why{background:#fbe9e9;color:var(--bad)}.chip.strategy{background:#e6ecfb;color:var(--accent)}
.prompt{background:#f7f8fa;border-left:3px solid #c5cad3;padding:4px 8px;margin-bottom:6px}
.sides{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:10px}
.side{border:1px solid var(--line);border-radius:6px;padding:6px 8px;min-width:0}
.side.chosen{border-top:3px solid var(--ok)}.side.rejected{border-top:3px solid var(--bad)}
.side-head{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-bottom:4px}
.side-head b{font-size:13px}.text{white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0}
details{margin:4px 0}summary{cursor:pointer;color:var(--mute);font-size:12.5px}
details .text{background:#fafafa;padding:4px 6px;border-radius:4px;max-height:420px;overflow:auto}
.role{font-size:11px;text-transform:uppercase;color:var(--mute)}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("page-data").textContent);
  var PAGE = 20;

  function el(tag, cls) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return typeof v === "number" ? v.toFixed(digits) : String(v);
  }
  function chip(text, cls) { return el("span", "chip" + (cls ? " " + cls : ""), text); }
  function folded(title, text) {
    var box = el("details", null, el("summary", null, title));
    box.append(el("div", "text", text));
    return box;
  }
  function conversation(pid) {
    var turns = data.prompts[pid] || [];
    var box = el("div", "prompt");
    if (!turns.length) { box.append(el("div", "note", "prompt " + pid + " (text not stored)")); return box; }
    var last = turns[turns.length - 1];
    box.append(el("div", "role", last[0]), el("div", "text", data.strings[last[1]]));
    if (turns.length > 1) {
      var all = el("details", null, el("summary", null, "whole conversation (" + turns.length + " messages)"));
      turns.forEach(function (t) { all.append(el("div", "role", t[0]), el("div", "text", data.strings[t[1]])); });
      box.append(all);
    }
    return box;
  }
  function side(label, s, cls) {
    var box = el("div", "side " + cls);
    var head = el("div", "side-head", el("b", null, label), chip("#" + s.i), chip(num(s.t, 0) + " tokens"),
      chip("score " + num(s.q, 1) + " / " + data.scale));
    if (s.S !== undefined) head.append(chip("S " + num(s.S, 3)));
    if (s.w) head.append(chip(s.w, "why"));
    if (s.f && s.f !== "stop") head.append(chip("finish " + s.f));
    Object.keys(s.x || {}).forEach(function (k) { head.append(chip(k + " " + num(s.x[k], Math.abs(s.x[k]) >= 10 ? 1 : 3))); });
    (s.g || []).forEach(function (t) { head.append(chip("tag " + t)); });
    box.append(head);
    if (s.r) box.append(folded("reasoning (" + s.r.length + " characters)", s.r));
    box.append(el("div", "text answer", s.a ? s.a : "(empty answer)"));
    if (s.j) box.append(folded("judge's reason", s.j));
    if (s.e) box.append(folded("engine error", s.e));
    if (s.cut) box.append(el("div", "note", s.cut + " characters cut (over " + data.max_text_chars + " per text); the whole text is in the run's Parquet"));
    return box;
  }
  function haystack(item) {
    if (item._text === undefined) {
      var parts = [item.p];
      (data.prompts[item.p] || []).forEach(function (t) { parts.push(data.strings[t[1]]); });
      [item.c, item.r, item.x].concat(item.samples || []).forEach(function (s) { if (s) parts.push(s.a, s.r, s.j || ""); });
      item._text = parts.join("\n").toLowerCase();
    }
    return item._text;
  }
  function options(select, values, first) {
    select.textContent = "";
    if (first) select.append(new Option(first[1], first[0]));
    values.forEach(function (v) { select.append(new Option(v[1], v[0])); });
  }

  // One browser: items, a filter from the controls, a sort, a card per item, pages of PAGE.
  function browser(kind, items, opts) {
    var state = { page: 0 };
    var list = document.getElementById(kind + "-list");
    var count = document.getElementById(kind + "-count");
    var search = document.getElementById(kind + "-search");
    var prompt = document.getElementById(kind + "-prompt");
    function filtered() {
      var q = search.value.trim().toLowerCase();
      var pid = prompt.value.trim();
      var out = items.filter(function (item) {
        if (pid && item.p !== pid) return false;
        if (!opts.keep(item)) return false;
        return !q || haystack(item).indexOf(q) >= 0;
      });
      if (opts.sort) out = opts.sort(out);
      return out;
    }
    function pager(box, shown, pages) {
      box.textContent = "";
      var prev = el("button", null, "previous"), next = el("button", null, "next");
      prev.disabled = state.page <= 0; next.disabled = state.page >= pages - 1;
      prev.addEventListener("click", function () { state.page -= 1; render(); });
      next.addEventListener("click", function () { state.page += 1; render(); });
      box.append(prev, el("span", null, "page " + (pages ? state.page + 1 : 0) + " of " + pages), next);
    }
    function render() {
      var rows = filtered();
      var pages = Math.ceil(rows.length / PAGE);
      state.page = Math.max(0, Math.min(state.page, pages - 1));
      count.dataset.n = String(rows.length);
      count.textContent = rows.length + " " + opts.noun + (rows.length === items.length ? "" : " (filtered from " + items.length + ")");
      list.textContent = "";
      var shown = rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
      shown.forEach(function (item) { list.append(opts.card(item)); });
      pager(document.getElementById(kind + "-pager"), shown, pages);
      pager(document.getElementById(kind + "-pager-top"), shown, pages);
    }
    function reset() { state.page = 0; render(); }
    document.querySelectorAll("#" + kind + "-controls input, #" + kind + "-controls select").forEach(function (c) {
      c.addEventListener("input", reset);
      c.addEventListener("change", reset);
    });
    document.getElementById(kind + "-note").textContent = opts.note;
    render();
  }

  function pairCard(item) {
    var box = el("div", "item pair");
    box.dataset.prompt = item.p;
    var head = el("div", "item-head", el("b", null, item.p));
    if (item.s) head.append(chip(item.s, "strategy"));
    if (item.m !== undefined) head.append(chip("margin " + num(item.m, 4)), chip("token gap " + item.gap));
    if (item.why) head.append(chip(item.why, "why"));
    if (item.n !== undefined) head.append(chip(item.n + " valid samples"));
    box.append(head, conversation(item.p));
    var sides = el("div", "sides");
    if (item.c) sides.append(side("chosen", item.c, "chosen"), side("rejected", item.r, "rejected"));
    (item.samples || []).forEach(function (s) { sides.append(side("sample", s, "")); });
    box.append(sides);
    return box;
  }
  function sampleCard(item) {
    var box = el("div", "item sample");
    box.dataset.prompt = item.p;
    box.append(el("div", "item-head", el("b", null, item.p), chip(item.why, "why")), conversation(item.p));
    box.append(el("div", "sides", side("sample", item.x, "")));
    return box;
  }
  function held(shown, total, noun) {
    return shown < total
      ? "This page holds " + shown + " of " + total + " " + noun + ": those of the prompts first in the order of a hash of prompt_id (at most " + data.max_pairs + "); the whole set is in the run directory."
      : "";
  }

  var ids = {};
  data.pairs.concat(data.dropped, data.excluded).forEach(function (item) { ids[item.p] = true; });
  var datalist = document.getElementById("prompt-ids");
  Object.keys(ids).sort().forEach(function (p) { datalist.append(new Option(p)); });

  var strategies = Object.keys(data.pairs_total);
  var strategySelect = document.getElementById("pairs-strategy");
  options(strategySelect, strategies.map(function (s) {
    return [s, s + (s === data.strategy ? " (pairs/)" : " (what it would keep)")];
  }), ["", "all"]);
  strategySelect.value = data.strategy;
  var sortSelect = document.getElementById("pairs-sort");
  var mainShown = data.pairs.filter(function (p) { return p.s === data.strategy; }).length;
  browser("pairs", data.pairs, {
    noun: "pairs",
    keep: function (item) { return !strategySelect.value || item.s === strategySelect.value; },
    sort: function (rows) {
      var how = sortSelect.value;
      var key = { "margin-desc": function (r) { return -r.m; }, "margin-asc": function (r) { return r.m; },
        "gap-desc": function (r) { return -r.gap; }, "gap-asc": function (r) { return r.gap; } }[how];
      return rows.slice().sort(key ? function (a, b) { return key(a) - key(b) || (a.p < b.p ? -1 : a.p > b.p ? 1 : 0); }
        : function (a, b) { return a.p < b.p ? -1 : a.p > b.p ? 1 : a.s < b.s ? -1 : 1; });
    },
    card: pairCard,
    note: held(mainShown, data.pairs_total[data.strategy], data.strategy + " pairs") +
      (mainShown < data.pairs_total[data.strategy] && strategies.length > 1 ? " The other strategy's pairs are those of the same prompts." : "") +
      " Kept pairs per strategy: " +
      strategies.map(function (s) { return s + " " + data.pairs_total[s]; }).join(", ") + ".",
  });

  var droppedReason = document.getElementById("dropped-reason");
  options(droppedReason, data.dropped_reasons.map(function (r) { return [r[0], r[0] + " (" + r[1] + ")"]; }), ["", "every reason"]);
  browser("dropped", data.dropped, {
    noun: "groups",
    keep: function (item) { return !droppedReason.value || item.why === droppedReason.value; },
    card: pairCard,
    note: held(data.dropped.length, data.dropped_total, "groups"),
  });

  var excludedReason = document.getElementById("excluded-reason");
  options(excludedReason, data.excluded_reasons.map(function (r) { return [r[0], r[0] + " (" + r[1] + ")"]; }), ["", "every reason"]);
  browser("excluded", data.excluded, {
    noun: "samples",
    keep: function (item) { return !excludedReason.value || item.why === excludedReason.value; },
    card: sampleCard,
    note: held(data.excluded.length, data.excluded_total, "samples"),
  });
})();
"""
