/* Results browser. Plain JavaScript, no library, nothing fetched: the data is the JSON block
   #report-data. Every string from the data enters the page as text (textContent), never as HTML. */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var Q = DATA.questions;
  var R = Q.rows;
  var N = R.id.length;
  var SCORE_KEYS = Q.scoreKeys;
  // NaN stands for a missing score, so that comparisons and typed arrays stay fast.
  var SCORES = R.scores.map(function (column) {
    return Float64Array.from(column, function (v) { return v === null ? NaN : v; });
  });
  var IMAGES = DATA.images || {};
  var ATT = (DATA.attention && DATA.attention.byId) || {};
  var SUMMARY = DATA.summary;
  // Without labels (stage 3's score distributions) nothing on the page speaks of right or wrong answers.
  var LABELLED = DATA.mode !== "distributions";
  var ROW_H = 26;
  var OVERSCAN = 8;
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22"];
  var PAD_COLOUR = "rgb(122,116,104)";  // LLaVA's padding: the CLIP mean as 0..255
  var DIRECTION_SPLITS = { yes_answers: "yes", no_answers: "no" };

  // ---------------------------------------------------------------- small helpers

  function $(id) { return document.getElementById(id); }

  /* el("td", {className: "num", title: "x"}, ["text", node]): strings become text nodes. */
  function el(tag, props, children) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (key) {
        if (key === "text") node.textContent = props[key];
        else if (key === "className") node.className = props[key];
        else if (key === "style") node.style.cssText = props[key];
        else node.setAttribute(key, props[key]);
      });
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    });
    return node;
  }

  function svgEl(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  /* Three decimals (or `digits`), 'n/a' for a missing value, no '-0.000'. */
  function fmt(v, digits) {
    if (!isNum(v)) return "n/a";
    var text = v.toFixed(digits === undefined ? 3 : digits);
    return /^-0\.0*$/.test(text) ? text.slice(1) : text;
  }

  function pct(v) { return isNum(v) ? (100 * v).toFixed(1) + "%" : "n/a"; }

  function inSplit(i, split) {
    if (split === "all") return true;
    if (DIRECTION_SPLITS[split]) return R.prediction[i] === DIRECTION_SPLITS[split];
    return R.split[i] === split;
  }

  function showValue(value) {
    if (value === null || value === undefined) return "none";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // ---------------------------------------------------------------- columns

  var ALL_NUMERIC_IDS = R.id.every(function (id) { return /^-?\d+(\.\d+)?$/.test(id); });
  var COLUMNS = [
    { key: "id", title: "id", width: 90, text: function (i) { return R.id[i]; },
      numeric: ALL_NUMERIC_IDS ? Float64Array.from(R.id, Number) : null },
    { key: "split", title: "split", width: 92, text: function (i) { return R.split[i]; } },
    { key: "question", title: "question", width: 250, text: function (i) { return R.question[i]; } },
    { key: "answer", title: "greedy answer", width: 104, text: function (i) { return R.answer[i]; } }
  ].concat(LABELLED ? [
    { key: "label", title: "label", width: 52, text: function (i) { return R.label[i]; } },
    { key: "correct", title: "correct", width: 74, text: function (i) { return R.wrong[i] ? "\u2717 wrong" : "\u2713 right"; },
      numeric: Float64Array.from(R.wrong) }
  ] : []).concat(SCORE_KEYS.map(function (key, j) {
    return { key: "score:" + key, title: key, width: 118, score: j, numeric: SCORES[j], isScore: true,
             text: function (i) { return fmt(SCORES[j][i], 4); } };
  }));
  var TABLE_WIDTH = COLUMNS.reduce(function (sum, c) { return sum + c.width; }, 0);
  var SEARCH = R.id.map(function (id, i) {
    return (id + "\u0001" + R.question[i] + "\u0001" + R.answer[i]).toLowerCase();
  });

  // ---------------------------------------------------------------- state

  var state = {
    sortColumn: null, sortDescending: false, order: null,
    split: "all", correct: "all", direction: "all", text: "", threshold: null,
    range: { score: -1, min: NaN, max: NaN },
    view: new Int32Array(0), selected: -1,
    heat: true, opacity: 0.7,
    curveSplit: "all", curveScores: null, distributionSplit: "all"
  };

  // ---------------------------------------------------------------- sorting and filtering

  function sortedOrder(column, descending) {
    var order = new Array(N);
    for (var i = 0; i < N; i++) order[i] = i;
    if (!column) return order;
    var sign = descending ? -1 : 1;
    if (column.numeric) {
      var values = column.numeric;
      order.sort(function (a, b) {
        var x = values[a], y = values[b];
        var xm = x !== x, ym = y !== y;  // NaN: missing values go last either way
        if (xm || ym) return xm === ym ? a - b : (xm ? 1 : -1);
        return x === y ? a - b : (x < y ? -sign : sign);
      });
    } else {
      var keys = order.map(function (i) { return column.text(i).toLowerCase(); });
      order.sort(function (a, b) {
        return keys[a] === keys[b] ? a - b : (keys[a] < keys[b] ? -sign : sign);
      });
    }
    return order;
  }

  /* The score range of the filter bar (runs without labels): both ends inclusive, an empty end open. */
  function inRange(i) {
    var r = state.range;
    if (r.score < 0) return true;
    var v = SCORES[r.score][i];
    return v === v && !(v < r.min) && !(v > r.max);
  }

  /* At or above the threshold's value; a histogram bin also below its upper edge (the last bin includes it). */
  function atThreshold(i, t) {
    var v = SCORES[t.score][i];
    if (!(v >= t.value)) return false;
    return t.below === undefined || v < t.below || (t.lastBin && v === t.below);
  }

  function passes(i) {
    if (state.split !== "all" && R.split[i] !== state.split) return false;
    if (state.correct !== "all" && (R.wrong[i] === 1) !== (state.correct === "wrong")) return false;
    if (state.direction !== "all" && R.prediction[i] !== state.direction) return false;
    if (state.text && SEARCH[i].indexOf(state.text) < 0) return false;
    if (!inRange(i)) return false;
    var t = state.threshold;
    if (t && !(inSplit(i, t.split) && atThreshold(i, t))) return false;
    return true;
  }

  function refresh() {
    if (!state.order) state.order = sortedOrder(state.sortColumn, state.sortDescending);
    var view = new Int32Array(N), count = 0;
    for (var k = 0; k < N; k++) {
      var i = state.order[k];
      if (passes(i)) view[count++] = i;
    }
    state.view = view.subarray(0, count);
    $("row-count").textContent = count + " of " + N + " questions";
    $("table-body").style.height = count * ROW_H + "px";
    renderRows();
  }

  // ---------------------------------------------------------------- the virtual table

  var scroller = $("table");
  var body = $("table-body");
  var pool = [];

  function buildHead() {
    var head = clear($("table-head"));
    head.style.width = TABLE_WIDTH + "px";
    body.style.width = TABLE_WIDTH + "px";
    COLUMNS.forEach(function (column, index) {
      var cell = el("div", { className: "cell" + (column.numeric && column.key !== "id" ? " num" : ""),
                             title: "sort by " + column.title, "data-column": column.key,
                             style: "width:" + column.width + "px" }, [column.title]);
      cell.addEventListener("click", function () { sortBy(index); });
      head.appendChild(cell);
    });
  }

  function markSortedHeader() {
    Array.prototype.forEach.call($("table-head").children, function (cell, index) {
      var sorted = COLUMNS[index] === state.sortColumn;
      cell.classList.toggle("sorted", sorted);
      cell.setAttribute("data-arrow", sorted ? (state.sortDescending ? "\u25bc" : "\u25b2") : "");
    });
  }

  /* A click sorts by the column; scores start with the most uncertain first, text from A. */
  function sortBy(index, descending) {
    var column = COLUMNS[index];
    if (descending === undefined) {
      descending = state.sortColumn === column ? !state.sortDescending : !!column.isScore;
    }
    state.sortColumn = column;
    state.sortDescending = descending;
    state.order = null;
    markSortedHeader();
    refresh();
    scroller.scrollTop = 0;
  }

  function makeRow() {
    var row = el("div", { className: "vrow", style: "width:" + TABLE_WIDTH + "px" });
    COLUMNS.forEach(function (column) {
      row.appendChild(el("div", { className: "cell" + (column.numeric && column.key !== "id" ? " num" : ""),
                                  style: "width:" + column.width + "px" }));
    });
    body.appendChild(row);
    return row;
  }

  function renderRows() {
    var count = state.view.length;
    // The sticky header covers the top of the scroller, so body row k is visible from scrollTop = k * ROW_H.
    var top = scroller.scrollTop;
    var first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    var last = Math.min(count, Math.ceil((top + scroller.clientHeight) / ROW_H) + OVERSCAN);
    var used = 0;
    for (var position = first; position < last; position++, used++) {
      var row = pool[used] || (pool[used] = makeRow());
      var i = state.view[position];
      row.style.display = "";
      row.style.transform = "translateY(" + position * ROW_H + "px)";
      row.setAttribute("data-index", i);
      row.classList.toggle("selected", i === state.selected);
      var cells = row.children;
      for (var c = 0; c < COLUMNS.length; c++) {
        var text = COLUMNS[c].text(i);
        if (cells[c].textContent !== text) cells[c].textContent = text;
        if (COLUMNS[c].key === "correct") cells[c].className = "cell num " + (R.wrong[i] ? "wrong" : "right");
      }
      cells[2].title = R.question[i];
    }
    for (; used < pool.length; used++) pool[used].style.display = "none";
  }

  function positionInView(i) {
    for (var k = 0; k < state.view.length; k++) if (state.view[k] === i) return k;
    return -1;
  }

  function scrollToPosition(position) {
    var headHeight = $("table-head").offsetHeight;
    var top = position * ROW_H, visible = scroller.clientHeight - headHeight;
    if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (top + ROW_H > scroller.scrollTop + visible) scroller.scrollTop = top + ROW_H - visible;
  }

  // ---------------------------------------------------------------- filters

  function setupFilters() {
    var splits = [];
    R.split.forEach(function (s) { if (splits.indexOf(s) < 0) splits.push(s); });
    var select = $("filter-split");
    select.appendChild(el("option", { value: "all", text: "all" }));
    splits.forEach(function (s) { select.appendChild(el("option", { value: s, text: s })); });
    select.addEventListener("change", function () { state.split = select.value; refresh(); });
    if (LABELLED) {
      $("filter-correct").addEventListener("change", function (e) { state.correct = e.target.value; refresh(); });
      $("filter-direction").addEventListener("change", function (e) { state.direction = e.target.value; refresh(); });
    } else {
      setupScoreFilter();
    }
    $("filter-text").addEventListener("input", function (e) {
      state.text = e.target.value.trim().toLowerCase();
      refresh();
    });
    $("threshold-clear").addEventListener("click", function () { setThreshold(null); });
  }

  /* Without labels: correctness and the yes/no reading of answers mean nothing, a score range does. */
  function setupScoreFilter() {
    ["correct-filter", "direction-filter"].forEach(function (id) { $(id).remove(); });
    $("score-filter").hidden = false;
    var select = $("filter-score");
    select.appendChild(el("option", { value: "-1", text: "any" }));
    SCORE_KEYS.forEach(function (key, j) { select.appendChild(el("option", { value: String(j), text: key })); });
    var read = function () {
      var bound = function (id) { var text = $(id).value.trim(); return text === "" ? NaN : Number(text); };
      state.range = { score: Number(select.value), min: bound("filter-score-min"), max: bound("filter-score-max") };
      refresh();
    };
    [select, $("filter-score-min"), $("filter-score-max")].forEach(function (input) {
      input.addEventListener(input === select ? "change" : "input", read);
    });
  }

  function clearScoreFilter() {
    $("filter-score").value = "-1";
    $("filter-score-min").value = "";
    $("filter-score-max").value = "";
    state.range = { score: -1, min: NaN, max: NaN };
  }

  function thresholdText(t) {
    var range = t.below === undefined ? " \u2265 " + fmt(t.value, 4)
      : " in [" + fmt(t.value, 4) + ", " + fmt(t.below, 4) + (t.lastBin ? "]" : ")");
    return SCORE_KEYS[t.score] + range + " in " + t.split + " (" + t.label + ")";
  }

  function setThreshold(threshold) {
    state.threshold = threshold;
    var chip = $("threshold-chip");
    chip.hidden = !threshold;
    if (threshold) $("threshold-text").textContent = thresholdText(threshold);
    refresh();
  }

  /* Every filter back to all questions of `split`, before a threshold is applied. */
  function resetFilters(split) {
    state.split = "all"; state.direction = "all"; state.correct = "all"; state.text = "";
    if (DIRECTION_SPLITS[split]) state.direction = DIRECTION_SPLITS[split];
    else if (split !== "all") state.split = split;
    $("filter-split").value = state.split;
    if (LABELLED) {
      $("filter-direction").value = state.direction;
      $("filter-correct").value = "all";
    } else {
      clearScoreFilter();
    }
    $("filter-text").value = "";
  }

  /* The questions that pass `threshold`, most uncertain first, in the question table. */
  function listThreshold(threshold) {
    resetFilters(threshold.split);
    var index = COLUMNS.findIndex(function (c) { return c.score === threshold.score; });
    state.sortColumn = COLUMNS[index]; state.sortDescending = true; state.order = null;
    markSortedHeader();
    showPanel("panel-questions");
    setThreshold(threshold);
    scroller.scrollTop = 0;
  }

  /* A curve point: the questions of its split whose score is at or above its threshold, most uncertain first. */
  function selectThreshold(score, split, value, label) {
    listThreshold({ score: score, split: split, value: value, label: label });
  }

  /* A histogram bar: the questions of its split whose score falls in its bin. */
  function selectBin(score, split, edges, bin) {
    listThreshold({ score: score, split: split, value: edges[bin], below: edges[bin + 1],
                    lastBin: bin === edges.length - 2, label: "histogram bin " + (bin + 1) + " of " + (edges.length - 1) });
  }

  // ---------------------------------------------------------------- ranks

  var rankCache = {};

  /* Rank of every question by score j: 1 = most uncertain; ties share the best rank; NaN = no rank. */
  function ranks(j) {
    if (rankCache[j]) return rankCache[j];
    var values = SCORES[j];
    var order = sortedOrder(COLUMNS.find(function (c) { return c.score === j; }), true);
    var result = new Float64Array(N).fill(NaN);
    var rank = 0;
    for (var k = 0; k < N; k++) {
      var i = order[k];
      if (values[i] !== values[i]) continue;
      if (k === 0 || values[i] !== values[order[k - 1]]) rank = k + 1;
      result[i] = rank;
    }
    rankCache[j] = result;
    return result;
  }

  function rankedCount(j) {
    var count = 0;
    for (var i = 0; i < N; i++) if (SCORES[j][i] === SCORES[j][i]) count++;
    return count;
  }

  // ---------------------------------------------------------------- the detail pane

  function select(i, keepScroll) {
    state.selected = i;
    renderRows();
    renderDetail(i);
    if (!keepScroll) {
      var position = positionInView(i);
      if (position >= 0) scrollToPosition(position);
    }
    if (history.replaceState) history.replaceState(null, "", "#q=" + encodeURIComponent(R.id[i]));
  }

  function section(title, children) {
    return el("section", { className: "detail-section" }, [el("h3", { text: title })].concat(children));
  }

  function renderDetail(i) {
    var pane = clear($("detail"));
    var detail = Q.details[i];
    pane.appendChild(el("h2", { id: "detail-title" }, ["Question " + R.id[i]]));
    pane.appendChild(el("div", {}, badges(i)));
    pane.appendChild(imageBlock(i));
    pane.appendChild(section("Question", [promptBlock(detail.prompt)]));
    pane.appendChild(section("Greedy answer", greedyBlock(i, detail.greedy)));
    pane.appendChild(section("Samples by meaning cluster", samplesBlock(detail)));
    pane.appendChild(section("Scores", [scoresTable(i)]));
    var attention = ATT[R.id[i]];
    if (attention) pane.appendChild(section("Attention", [attentionTable(attention)]));
  }

  function badges(i) {
    if (!LABELLED) {
      return [el("span", { className: "badge", text: R.split[i] }), el("span", { className: "badge", text: "image: " + R.image[i] })];
    }
    var wrong = R.wrong[i] === 1;
    return [
      el("span", { className: "badge", text: R.split[i] }),
      el("span", { className: "badge " + (wrong ? "wrong" : "right"), id: "detail-correct",
                   text: wrong ? "greedy answer wrong" : "greedy answer right" }),
      el("span", { className: "badge", text: "label: " + R.label[i] }),
      el("span", { className: "badge", text: "image: " + R.image[i] })
    ];
  }

  function promptBlock(prompt) {
    var suffix = "\nAnswer the question using a single word or phrase.";
    var block = el("div", { className: "prompt", id: "detail-prompt" });
    if (prompt.slice(-suffix.length) === suffix) {
      block.appendChild(document.createTextNode(prompt.slice(0, -suffix.length)));
      block.appendChild(el("span", { className: "suffix", text: suffix }));
    } else {
      block.textContent = prompt;
    }
    return block;
  }

  function greedyBlock(i, greedy) {
    var parts = [el("div", {}, [el("strong", { id: "detail-answer", text: R.answer[i] })].concat(LABELLED
      ? [" \u2192 read as \u201c" + R.prediction[i] + "\u201d; the label says \u201c" + R.label[i] + "\u201d"] : []))];
    if (!greedy) return parts.concat([el("p", { className: "muted", text: "no greedy answer in the generations" })]);
    var rows = greedy.tokens.map(function (token, t) {
      return el("tr", {}, [el("td", { className: "num", text: String(t) }), el("td", { className: "token", text: token[0] }),
                           el("td", { className: "num", text: fmt(token[1], 4) }),
                           el("td", { className: "num", text: isNum(token[1]) ? fmt(Math.exp(token[1]), 4) : "n/a" })]);
    });
    parts.push(el("table", { className: "grid", id: "detail-tokens" }, [
      el("tr", {}, [el("th", { text: "#" }), el("th", { text: "token" }), el("th", { text: "log-prob" }),
                    el("th", { text: "prob" })])
    ].concat(rows)));
    if (isNum(greedy.logLikelihood)) {
      parts.push(el("div", { className: "muted",
        text: "answer log-likelihood (mean token log-prob, EOS excluded): " + fmt(greedy.logLikelihood, 4) }));
    }
    return parts;
  }

  /* Samples grouped by the cluster stage 2 gave them, most probable cluster first. */
  function samplesBlock(detail) {
    var samples = detail.samples;
    if (!detail.clusters.length) return [el("p", { className: "muted", text: "no clusters" })];
    var blocks = [];
    detail.clusters.forEach(function (clustering) {
      if (detail.clusters.length > 1) blocks.push(el("h4", { text: clustering.label }));
      var groups = {};
      clustering.ids.forEach(function (cluster, s) { (groups[cluster] = groups[cluster] || []).push(s); });
      var ids = Object.keys(groups).map(Number);
      var prob = function (c) { return clustering.probs && isNum(clustering.probs[c]) ? clustering.probs[c] : null; };
      ids.sort(function (a, b) {
        var pa = prob(a), pb = prob(b);
        return pa !== null && pb !== null && pa !== pb ? pb - pa : groups[b].length - groups[a].length || a - b;
      });
      var list = el("div", { className: "clusters" });
      ids.forEach(function (c) {
        var members = groups[c];
        var greedy = clustering.greedy === c;
        var head = "cluster " + c + ": " + members.length + " of " + samples.length + " samples";
        if (prob(c) !== null) head += ", p = " + fmt(prob(c), 3);
        if (greedy) head += "  \u2190 the greedy answer's cluster";
        var counts = {};
        members.forEach(function (s) {
          var key = samples[s][0];
          counts[key] = counts[key] || { n: 0, ll: samples[s][1] };
          counts[key].n += 1;
        });
        var box = el("div", { className: "cluster" + (greedy ? " greedy" : "") },
                     [el("div", { className: "cluster-head", text: head })]);
        Object.keys(counts).forEach(function (text) {
          var info = counts[text];
          box.appendChild(el("div", { className: "sample" }, [
            el("span", { className: "sample-text", text: text === "" ? "(empty)" : text }),
            el("span", { className: "muted", text: "  \u00d7" + info.n +
              (isNum(info.ll) ? ", log-likelihood " + fmt(info.ll, 3) : "") })
          ]));
        });
        list.appendChild(box);
      });
      if (clustering.greedy !== null && clustering.greedy !== undefined && !groups[clustering.greedy]) {
        list.appendChild(el("p", { className: "muted", text: "The greedy answer matches no sample's cluster." }));
      }
      blocks.push(list);
    });
    return blocks;
  }

  function scoresTable(i) {
    var table = el("table", { className: "grid", id: "detail-scores" }, [
      el("tr", {}, [el("th", { text: "score" }), el("th", { text: "value" }),
                    el("th", { text: "rank (1 = most uncertain)" }), el("th", { text: "" })])
    ]);
    SCORE_KEYS.forEach(function (key, j) {
      var value = SCORES[j][i];
      var rank = ranks(j)[i], total = rankedCount(j);
      var share = isNum(rank) && total > 1 ? 1 - (rank - 1) / (total - 1) : 0;
      table.appendChild(el("tr", { "data-score": key }, [
        el("td", { text: key }), el("td", { className: "num", text: fmt(value, 4) }),
        el("td", { className: "num", text: isNum(rank) ? rank + " of " + total : "n/a" }),
        el("td", {}, [el("span", { className: "rankbar", style: "width:" + Math.round(80 * share) + "px",
                                   title: "share of questions this one is at least as uncertain as" })])
      ]));
    });
    return table;
  }

  function attentionTable(a) {
    var rows = [
      ["aggregation", a.aggregation],
      ["answer tokens", (a.tokens || []).join(" ")],
      ["image share of attention", pct(a.imageShare)],
      ["question share of attention", pct(a.questionShare)],
      ["map entropy (normalised)", fmt(a.mapEntropy, 3) + " (" + fmt(a.mapEntropyNormalized, 3) + ")"],
      ["hottest patch (row, col)", "(" + a.hottest[0] + ", " + a.hottest[1] + ")"],
      ["hottest patch box in original pixels", a.hottestBox ? "[" + a.hottestBox.join(", ") + "]" : "padding only"],
      ["hottest patch share", pct(a.hottestShare)],
      ["attention on padding-only patches", pct(a.paddingShare)]
    ];
    if (a.pointing) {
      rows.push(["pointing game", a.pointing["class"] + (a.pointing.present
        ? ": " + (a.pointing.hit ? "hit" : "miss") + " (chance " + pct(a.pointing.chance) + ")" : ": not in the image")]);
    }
    var table = el("table", { className: "grid", id: "detail-attention" });
    rows.forEach(function (r) { table.appendChild(el("tr", {}, [el("th", { text: r[0] }), el("td", { text: String(r[1]) })])); });
    return table;
  }

  // ---------------------------------------------------------------- image and attention map

  var imageCache = {};

  function loadImage(name, then) {
    var entry = IMAGES[name];
    if (!entry) return null;
    var cached = imageCache[name];
    if (!cached) {
      cached = imageCache[name] = { img: new Image(), ready: false, failed: false, waiting: [] };
      var settle = function (ok) {
        cached.ready = ok;
        cached.failed = !ok;
        cached.waiting.forEach(function (f) { f(); });
        cached.waiting = [];
      };
      cached.img.onload = function () { settle(true); };
      cached.img.onerror = function () { settle(false); };
      cached.img.src = entry.src;
    }
    if (cached.ready || cached.failed) then(); else cached.waiting.push(then);
    return cached.img;
  }

  function decodeMap(a) {
    if (!a.map) return null;
    if (!a.levels) {
      var raw = atob(a.map);
      a.levels = new Uint8Array(raw.length);
      for (var k = 0; k < raw.length; k++) a.levels[k] = raw.charCodeAt(k);
    }
    return a.levels;
  }

  /* A perceptually ordered map from dark purple to yellow (magma-like), v in [0, 1]. */
  var STOPS = [[0, [0, 0, 4]], [0.25, [81, 18, 124]], [0.5, [183, 55, 121]], [0.75, [252, 137, 97]], [1, [252, 253, 191]]];
  function colour(v) {
    for (var s = 1; s < STOPS.length; s++) {
      if (v <= STOPS[s][0]) {
        var a = STOPS[s - 1], b = STOPS[s], f = (v - a[0]) / (b[0] - a[0]);
        return [0, 1, 2].map(function (c) { return Math.round(a[1][c] + f * (b[1][c] - a[1][c])); });
      }
    }
    return STOPS[STOPS.length - 1][1];
  }

  function imageBlock(i) {
    var name = R.image[i];
    var entry = IMAGES[name];
    var attention = ATT[R.id[i]];
    var box = el("div", { className: "image-box", id: "detail-image" });
    if (!entry && !attention) {
      box.appendChild(el("p", { className: "muted", text: "Image " + name + " was not found when the page was built." }));
      return box;
    }
    var geometry = (attention && attention.geometry) || entry;
    var canvas = el("canvas", { id: "detail-canvas" });
    box.appendChild(canvas);
    var draw = function () {
      drawImage(canvas, entry ? name : null, geometry, attention);
      var cached = imageCache[name];
      if (cached && cached.failed && !box.querySelector(".image-failed")) {
        box.insertBefore(el("p", { className: "note image-failed", text: "The image could not be loaded from " +
          entry.src.slice(0, 200) + " (a linked file moved?)" }), canvas);
      }
    };
    if (attention) {
      var levels = decodeMap(attention);
      var controls = el("div", { className: "image-controls" });
      if (levels) {
        var toggle = el("input", { type: "checkbox", id: "heat-toggle" });
        toggle.checked = state.heat;
        toggle.addEventListener("change", function () { state.heat = toggle.checked; draw(); });
        var slider = el("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(state.opacity) });
        slider.addEventListener("input", function () { state.opacity = Number(slider.value); draw(); });
        controls.appendChild(el("label", {}, [toggle, " attention map"]));
        controls.appendChild(el("label", {}, ["opacity ", slider]));
        var bar = el("canvas", { className: "colorbar", width: "120", height: "10" });
        var context = bar.getContext("2d");
        for (var x = 0; x < 120; x++) {
          var rgb = colour(x / 119);
          context.fillStyle = "rgb(" + rgb.join(",") + ")";
          context.fillRect(x, 0, 1, 10);
        }
        controls.appendChild(el("span", { style: "white-space:nowrap" }, ["0 ", bar, " " + pct(attention.mapTop) + " of the image attention"]));
      } else {
        controls.appendChild(el("span", { className: "muted",
          text: "No saved map for this question (visualize_attention --save-maps): the hottest patch is outlined." }));
      }
      box.appendChild(controls);
      box.appendChild(el("div", { className: "muted",
        text: "Patches of LLaVA's 24\u00d724 grid on the original image; hatched: the padding LLaVA added to make it " +
              "square (its heat is attention to padding). White outline: the hottest patch. " + (attention.aggregation || "") }));
    }
    if (entry) loadImage(name, draw); else draw();
    return box;
  }

  /* With attention: the padded square as LLaVA saw it (image at its offset, padding hatched), patch heat
     on top, exact patch boxes from the square's side / grid. Without: the image alone. */
  function drawImage(canvas, name, g, attention) {
    var ratio = window.devicePixelRatio || 1;
    var display = 360;
    var context = canvas.getContext("2d");
    var img = name === null ? null : imageCache[name];
    // What was drawn, for readers of the page (and its tests): the image, or why not.
    canvas.setAttribute("data-image", !img ? "absent" : img.ready ? "drawn" : img.failed ? "failed to load" : "loading");
    if (!attention) {
      var scaleOnly = display / Math.max(g.width, g.height);
      var w = Math.round(g.width * scaleOnly), h = Math.round(g.height * scaleOnly);
      canvas.width = w * ratio; canvas.height = h * ratio;
      canvas.style.width = w + "px"; canvas.style.height = h + "px";
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      if (img && img.ready) context.drawImage(img.img, 0, 0, w, h);
      return;
    }
    var scale = display / g.side;
    canvas.width = display * ratio; canvas.height = display * ratio;
    canvas.style.width = display + "px"; canvas.style.height = display + "px";
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.fillStyle = PAD_COLOUR;
    context.fillRect(0, 0, display, display);
    var ix = g.dx * scale, iy = g.dy * scale, iw = g.width * scale, ih = g.height * scale;
    if (img && img.ready) context.drawImage(img.img, ix, iy, iw, ih);
    var grid = attention.grid || 24, step = display / grid;
    var levels = decodeMap(attention);
    if (levels && state.heat) {
      for (var r = 0; r < grid; r++) {
        for (var c = 0; c < grid; c++) {
          var v = levels[r * grid + c] / 255;
          if (v <= 0) continue;
          var rgb = colour(v);
          context.fillStyle = "rgba(" + rgb.join(",") + "," + (state.opacity * v).toFixed(3) + ")";
          context.fillRect(c * step, r * step, step, step);
        }
      }
    }
    // Hatch the padding: everything in the square outside the image.
    context.save();
    context.beginPath();
    context.rect(0, 0, display, display);
    context.rect(ix, iy, iw, ih);
    context.clip("evenodd");
    context.strokeStyle = "rgba(255,255,255,0.55)";
    context.lineWidth = 1;
    for (var d = -display; d < display; d += 7) {
      context.beginPath(); context.moveTo(d, display); context.lineTo(d + display, 0); context.stroke();
    }
    context.restore();
    context.strokeStyle = "rgba(255,255,255,0.9)";
    context.setLineDash([4, 3]);
    context.strokeRect(ix + 0.5, iy + 0.5, iw - 1, ih - 1);
    context.setLineDash([]);
    if (isNum(attention.hottest[0])) {
      context.lineWidth = 2;
      context.strokeStyle = "#fff";
      context.strokeRect(attention.hottest[1] * step, attention.hottest[0] * step, step, step);
    }
  }

  // ---------------------------------------------------------------- summary tables

  function cellText(cell) {
    if (!cell || !isNum(cell.value)) return "n/a";
    var text = fmt(cell.value);
    if (isNum(cell.ci_low)) text += " [" + fmt(cell.ci_low) + ", " + fmt(cell.ci_high) + "]";
    return text;
  }

  function renderSplitStats() {
    var report = SUMMARY.report;
    var table = el("table", { className: "grid" }, [el("tr", {}, ["split", "questions", "errors", "accuracy [interval]",
      "bootstrap unit", "units"].map(function (t) { return el("th", { text: t }); }))]);
    Object.keys(report).forEach(function (split) {
      var s = report[split];
      var accuracy = fmt(s.accuracy) + (isNum(s.accuracy_ci_low) ? " [" + fmt(s.accuracy_ci_low) + ", " + fmt(s.accuracy_ci_high) + "]" : "");
      table.appendChild(el("tr", {}, [el("td", { text: split, title: SUMMARY.splitNotes[split] || "" }),
        el("td", { className: "num", text: String(s.n) }), el("td", { className: "num", text: String(s.n_errors) }),
        el("td", { className: "num", text: accuracy }), el("td", { text: s.bootstrap_unit || "" }),
        el("td", { className: "num", text: s.n_units === undefined ? "" : String(s.n_units) })]));
    });
    clear($("split-stats")).appendChild(table);
  }

  function renderMetricTables() {
    var metric = $("metric-select").value;
    var report = SUMMARY.report;
    var splits = Object.keys(report);
    var best = {};
    splits.forEach(function (split) {
      var values = SUMMARY.columns.map(function (key) {
        var cell = report[split][key] && report[split][key][metric];
        return cell && isNum(cell.value) ? cell.value : -Infinity;
      });
      best[split] = Math.max.apply(null, values);
    });
    var table = el("table", { className: "grid", id: "metric-grid" },
      [el("tr", {}, [el("th", { text: "score" })].concat(splits.map(function (s) { return el("th", { text: s }); })))]);
    SUMMARY.columns.forEach(function (key) {
      table.appendChild(el("tr", {}, [el("td", { text: key })].concat(splits.map(function (split) {
        var cell = report[split][key] && report[split][key][metric];
        var isBest = cell && isNum(cell.value) && cell.value === best[split];
        return el("td", { className: "num" + (isBest ? " best" : ""), title: (cell && (cell.reason || cell.ci_reason)) || "",
                          text: cellText(cell) });
      }))));
    });
    clear($("metric-table")).appendChild(table);

    var paired = clear($("paired-table"));
    var reference = null;
    splits.forEach(function (s) { reference = reference || report[s].paired_reference; });
    if (!reference || SUMMARY.pairedMetrics.indexOf(metric) < 0) return;
    paired.appendChild(el("h3", { text: "Paired difference from " + reference + ": " + SUMMARY.titles[metric] +
      "(score) \u2212 " + SUMMARY.titles[metric] + "(" + reference + ") on the same resamples" }));
    var ptable = el("table", { className: "grid", id: "paired-grid" },
      [el("tr", {}, [el("th", { text: "score" })].concat(splits.map(function (s) { return el("th", { text: s }); })))]);
    SUMMARY.columns.forEach(function (key) {
      if (key === reference) return;
      ptable.appendChild(el("tr", {}, [el("td", { text: key })].concat(splits.map(function (split) {
        var cell = report[split].paired && report[split].paired[key] && report[split].paired[key][metric];
        var text = cellText(cell);
        var holm = SUMMARY.holm[split] && SUMMARY.holm[split][metric] && SUMMARY.holm[split][metric][key];
        if (cell && isNum(cell.value) && isNum(holm)) text += " p=" + fmt(holm) + (holm < 0.05 ? "*" : "");
        return el("td", { className: "num", text: text, title: (cell && (cell.reason || cell.ci_reason)) || "" });
      }))));
    });
    paired.appendChild(ptable);
    paired.appendChild(el("p", { className: "muted", text: "p: two-sided paired bootstrap p-value, Holm-adjusted across " +
      "the scores of each split; * p < 0.05; p=0.000 means no resample fell on the other side of 0." }));
  }

  function setupSummary() {
    var select = $("metric-select");
    SUMMARY.metrics.forEach(function (m) { select.appendChild(el("option", { value: m, text: SUMMARY.titles[m] })); });
    select.addEventListener("change", renderMetricTables);
    renderSplitStats();
    renderMetricTables();
  }

  // ---------------------------------------------------------------- curves

  /* ROC and accuracy-rejection points of score j on a split, one per distinct threshold, most uncertain
     first: flagged (rejected) = score >= threshold. Both start where nothing is flagged. */
  function curvePoints(j, split) {
    var rows = [];
    for (var i = 0; i < N; i++) if (inSplit(i, split) && SCORES[j][i] === SCORES[j][i]) rows.push(i);
    var values = SCORES[j];
    rows.sort(function (a, b) { return values[b] - values[a]; });
    var n = rows.length, errors = 0;
    rows.forEach(function (i) { errors += R.wrong[i]; });
    var right = n - errors;
    var roc = [{ x: 0, y: 0, t: Infinity, k: 0, e: 0 }];
    var rejection = [{ x: 0, y: n ? right / n : NaN, t: Infinity, k: 0, e: 0 }];
    var k = 0, e = 0;
    while (k < n) {
      var t = values[rows[k]];
      while (k < n && values[rows[k]] === t) { e += R.wrong[rows[k]]; k++; }
      roc.push({ x: right ? (k - e) / right : NaN, y: errors ? e / errors : NaN, t: t, k: k, e: e });
      if (k < n) rejection.push({ x: k / n, y: (right - (k - e)) / (n - k), t: t, k: k, e: e });
    }
    return { roc: roc, rejection: rejection, n: n, errors: errors };
  }

  var curveCache = {};
  function cachedCurve(j, split) {
    var key = j + "|" + split;
    return curveCache[key] || (curveCache[key] = curvePoints(j, split));
  }

  function defaultCurveScores() {
    var all = SUMMARY.report.all || SUMMARY.report[Object.keys(SUMMARY.report)[0]];
    var ranked = SCORE_KEYS.map(function (key, j) {
      var cell = all && all[key] && all[key].auroc;
      return { j: j, v: cell && isNum(cell.value) ? cell.value : -1 };
    });
    ranked.sort(function (a, b) { return b.v - a.v || a.j - b.j; });
    return ranked.slice(0, Math.min(5, ranked.length)).map(function (r) { return r.j; });
  }

  var PLOT = { left: 52, right: 14, top: 30, bottom: 42, width: 460, height: 360 };
  var plots = {};

  function axes(svg, title, xLabel, yLabel, yMin) {
    clear(svg);
    var w = PLOT.width - PLOT.left - PLOT.right, h = PLOT.height - PLOT.top - PLOT.bottom;
    svg.appendChild(svgEl("rect", { "class": "plot-area", x: PLOT.left, y: PLOT.top, width: w, height: h }));
    for (var k = 0; k <= 4; k++) {
      var f = k / 4;
      var gx = PLOT.left + f * w, gy = PLOT.top + h - f * h;
      svg.appendChild(svgEl("line", { "class": "gridline", x1: gx, y1: PLOT.top, x2: gx, y2: PLOT.top + h }));
      svg.appendChild(svgEl("line", { "class": "gridline", x1: PLOT.left, y1: gy, x2: PLOT.left + w, y2: gy }));
      var xt = svgEl("text", { x: gx, y: PLOT.top + h + 14, "text-anchor": "middle" });
      xt.textContent = f.toFixed(2);
      svg.appendChild(xt);
      var yt = svgEl("text", { x: PLOT.left - 6, y: gy + 4, "text-anchor": "end" });
      yt.textContent = (yMin + f * (1 - yMin)).toFixed(2);
      svg.appendChild(yt);
    }
    var t = svgEl("text", { x: PLOT.left, y: 18 }); t.textContent = title; t.setAttribute("font-weight", "600");
    svg.appendChild(t);
    var xl = svgEl("text", { x: PLOT.left + w / 2, y: PLOT.height - 8, "text-anchor": "middle" }); xl.textContent = xLabel;
    svg.appendChild(xl);
    var yl = svgEl("text", { x: 12, y: PLOT.top + h / 2, "text-anchor": "middle",
                             transform: "rotate(-90 12 " + (PLOT.top + h / 2) + ")" });
    yl.textContent = yLabel;
    svg.appendChild(yl);
    return { x: function (v) { return PLOT.left + v * w; },
             y: function (v) { return PLOT.top + h - (v - yMin) / (1 - yMin) * h; } };
  }

  function polyline(svg, points, toX, toY, colour, extra) {
    var text = points.filter(function (p) { return isNum(p.x) && isNum(p.y); })
      .map(function (p) { return toX(p.x).toFixed(2) + "," + toY(p.y).toFixed(2); }).join(" ");
    var attrs = { points: text, stroke: colour };
    Object.keys(extra || {}).forEach(function (k) { attrs[k] = extra[k]; });
    svg.appendChild(svgEl("polyline", attrs));
  }

  function renderCurves() {
    var split = state.curveSplit;
    var chosen = state.curveScores;
    var data = chosen.map(function (j) { return { j: j, curve: cachedCurve(j, split) }; });
    var rocSvg = $("roc-curve"), rejSvg = $("rejection-curve");
    var stats = SUMMARY.report[split] || {};
    var roc = axes(rocSvg, "ROC, " + split + " (n=" + (stats.n || 0) + ", errors=" + (stats.n_errors || 0) + ")",
                   "false-positive rate (right answers flagged)", "true-positive rate (errors flagged)", 0);
    rocSvg.appendChild(svgEl("line", { "class": "reference", x1: roc.x(0), y1: roc.y(0), x2: roc.x(1), y2: roc.y(1) }));
    var lowest = 1;
    data.forEach(function (d) { d.curve.rejection.forEach(function (p) { if (isNum(p.y)) lowest = Math.min(lowest, p.y); }); });
    var yMin = Math.max(0, Math.floor(lowest * 10) / 10 - 0.1);
    if (yMin >= 1) yMin = 0.9;
    var rej = axes(rejSvg, "Accuracy-rejection, " + split, "rejection rate (most uncertain first)",
                   "accuracy of the kept answers", yMin);
    var n = data.length ? data[0].curve.n : 0, errors = data.length ? data[0].curve.errors : 0;
    if (n) {
      var base = (n - errors) / n;
      rejSvg.appendChild(svgEl("line", { "class": "reference", x1: rej.x(0), y1: rej.y(base), x2: rej.x(1), y2: rej.y(base) }));
      var oracle = [];
      for (var s = 0; s <= 100; s++) {
        var kept = Math.max(1, n - Math.floor(s / 100 * n));
        oracle.push({ x: (n - kept) / n, y: Math.min(kept, n - errors) / kept });
      }
      polyline(rejSvg, oracle, rej.x, rej.y, "#101828", { "class": "reference" });
    }
    data.forEach(function (d) {
      var colour = PALETTE[chosen.indexOf(d.j) % PALETTE.length];
      polyline(rocSvg, d.curve.roc, roc.x, roc.y, colour, { "data-score": SCORE_KEYS[d.j] });
      polyline(rejSvg, d.curve.rejection, rej.x, rej.y, colour, { "data-score": SCORE_KEYS[d.j] });
    });
    plots.roc = { svg: rocSvg, map: roc, key: "roc", data: data };
    plots.rejection = { svg: rejSvg, map: rej, key: "rejection", data: data };
    renderLegend();
  }

  function renderLegend() {
    var legend = clear($("curve-legend"));
    var split = state.curveSplit;
    legend.appendChild(el("div", { className: "muted", text: "scores drawn (AUROC on " + split + ")" }));
    SCORE_KEYS.forEach(function (key, j) {
      var box = el("input", { type: "checkbox", "data-score": key });
      var index = state.curveScores.indexOf(j);
      box.checked = index >= 0;
      box.addEventListener("change", function () {
        if (box.checked) state.curveScores.push(j);
        else state.curveScores = state.curveScores.filter(function (x) { return x !== j; });
        renderCurves();
      });
      var cell = SUMMARY.report[split] && SUMMARY.report[split][key] && SUMMARY.report[split][key].auroc;
      var swatch = el("span", { className: "swatch",
        style: "background:" + (index >= 0 ? PALETTE[index % PALETTE.length] : "transparent") });
      legend.appendChild(el("label", {}, [box, swatch, key + " (" + (cell ? fmt(cell.value) : "n/a") + ")"]));
    });
  }

  /* The curve point nearest the pointer (in pixels), over every drawn score. */
  function nearestPoint(plot, event) {
    var rect = plot.svg.getBoundingClientRect();
    var px = (event.clientX - rect.left) * PLOT.width / rect.width;
    var py = (event.clientY - rect.top) * PLOT.height / rect.height;
    var best = null, bestDistance = Infinity;
    plot.data.forEach(function (d) {
      d.curve[plot.key].forEach(function (p) {
        if (!isNum(p.x) || !isNum(p.y)) return;
        var dx = plot.map.x(p.x) - px, dy = plot.map.y(p.y) - py, distance = dx * dx + dy * dy;
        if (distance < bestDistance) { bestDistance = distance; best = { j: d.j, p: p, n: d.curve.n }; }
      });
    });
    return bestDistance <= 30 * 30 ? best : null;
  }

  function pointLabel(plot, hit) {
    var p = hit.p;
    var threshold = p.t === Infinity ? "above every score" : "\u2265 " + fmt(p.t, 4);
    if (plot.key === "roc") {
      return SCORE_KEYS[hit.j] + " " + threshold + "\nFPR " + fmt(p.x) + ", TPR " + fmt(p.y) +
        "\nflags " + p.k + " of " + hit.n + " (" + p.e + " errors)";
    }
    return SCORE_KEYS[hit.j] + " " + threshold + "\nrejection " + fmt(p.x) + ", accuracy of the kept " + fmt(p.y) +
      "\nrejects " + p.k + " of " + hit.n + " (" + p.e + " errors)";
  }

  function setupCurves() {
    var select = $("curve-split");
    Object.keys(SUMMARY.report).forEach(function (s) { select.appendChild(el("option", { value: s, text: s })); });
    state.curveSplit = SUMMARY.report.all ? "all" : Object.keys(SUMMARY.report)[0];
    select.value = state.curveSplit;
    select.addEventListener("change", function () { state.curveSplit = select.value; renderCurves(); });
    state.curveScores = defaultCurveScores();
    var tip = $("curve-tip");
    ["roc", "rejection"].forEach(function (name) {
      var svg = $(name === "roc" ? "roc-curve" : "rejection-curve");
      var marker = null;
      svg.addEventListener("mousemove", function (event) {
        var plot = plots[name];
        var hit = plot && nearestPoint(plot, event);
        if (marker && marker.parentNode) marker.parentNode.removeChild(marker);
        if (!hit) { tip.hidden = true; svg.style.cursor = ""; return; }
        marker = svgEl("circle", { cx: plot.map.x(hit.p.x), cy: plot.map.y(hit.p.y), r: 4.5, fill: "none",
                                   stroke: "#101828", "stroke-width": 2, "class": "hover-marker" });
        svg.appendChild(marker);
        svg.style.cursor = "pointer";
        tip.textContent = pointLabel(plot, hit) + "\nclick: list these questions";
        var box = svg.parentNode.getBoundingClientRect();
        tip.style.left = (event.clientX - box.left + 14) + "px";
        tip.style.top = (event.clientY - box.top + 14) + "px";
        tip.hidden = false;
      });
      svg.addEventListener("mouseleave", function () {
        tip.hidden = true;
        if (marker && marker.parentNode) marker.parentNode.removeChild(marker);
      });
      svg.addEventListener("click", function (event) {
        var plot = plots[name];
        var hit = plot && nearestPoint(plot, event);
        if (!hit) return;
        tip.hidden = true;
        var label = name === "roc" ? "ROC point FPR " + fmt(hit.p.x) + ", TPR " + fmt(hit.p.y)
                                   : "rejection " + fmt(hit.p.x) + ", accuracy " + fmt(hit.p.y);
        selectThreshold(hit.j, state.curveSplit, hit.p.t, label);
      });
    });
  }

  // ---------------------------------------------------------------- score distributions (no labels)

  /* distributions.json's splits: "all", then each category present. */
  function distributionSplits() { return Object.keys(SUMMARY.report); }

  function renderDistributionSplits() {
    var table = el("table", { className: "grid", id: "distribution-split-grid" },
      [el("tr", {}, [el("th", { text: "split" }), el("th", { text: "questions" })])]);
    distributionSplits().forEach(function (split) {
      table.appendChild(el("tr", {}, [el("td", { text: split }),
                                      el("td", { className: "num", text: String(SUMMARY.report[split].n) })]));
    });
    clear($("distribution-splits")).appendChild(table);
  }

  function renderDistributionTable() {
    var entry = SUMMARY.report[state.distributionSplit];
    var table = el("table", { className: "grid", id: "distribution-grid" },
      [el("tr", {}, [el("th", { text: "score" })].concat(SUMMARY.statistics.map(function (name) {
        return el("th", { text: name });
      })))]);
    SUMMARY.columns.forEach(function (key) {
      var summary = entry[key];
      table.appendChild(el("tr", { "data-score": key }, [el("td", { text: key })].concat(SUMMARY.statistics.map(function (name) {
        return el("td", { className: "num", "data-statistic": name,
                          text: name === "n" ? String(summary.n) : fmt(summary[name]) });
      }))));
    });
    clear($("distribution-table")).appendChild(table);
  }

  var HIST = { left: 36, right: 10, top: 22, bottom: 30, width: 300, height: 180 };

  /* One score's histogram on the chosen split: bars over the edges every split shares. */
  function histogram(key) {
    var split = state.distributionSplit;
    var counts = SUMMARY.report[split][key].histogram.counts;
    var edges = SUMMARY.report[split][key].histogram.edges;
    var svg = svgEl("svg", { "class": "histogram", viewBox: "0 0 " + HIST.width + " " + HIST.height, role: "img",
                             "aria-label": "histogram of " + key, "data-score": key });
    var w = HIST.width - HIST.left - HIST.right, h = HIST.height - HIST.top - HIST.bottom;
    var top = Math.max.apply(null, counts.concat([1]));
    var title = svgEl("text", { x: HIST.left, y: 14, "font-weight": "600" });
    title.textContent = key;
    svg.appendChild(title);
    var labels = [[HIST.left, "start", fmt(edges[0])], [HIST.left + w, "end", fmt(edges[edges.length - 1])],
                  [HIST.left - 4, "end", String(top)]];
    labels.forEach(function (l, k) {
      var t = svgEl("text", { x: l[0], y: k < 2 ? HIST.top + h + 14 : HIST.top + 8, "text-anchor": l[1] });
      t.textContent = l[2];
      svg.appendChild(t);
    });
    svg.appendChild(svgEl("line", { "class": "baseline", x1: HIST.left, y1: HIST.top + h, x2: HIST.left + w, y2: HIST.top + h }));
    var step = w / counts.length;
    counts.forEach(function (count, bin) {
      var barHeight = count / top * h;
      var bar = svgEl("rect", { "class": "bar", x: (HIST.left + bin * step + 0.5).toFixed(2), width: Math.max(step - 1, 0.5).toFixed(2),
                                y: (HIST.top + h - barHeight).toFixed(2), height: barHeight.toFixed(2),
                                "data-bin": bin, "data-count": count });
      bar.addEventListener("mousemove", function (event) { showBinTip(event, key, edges, bin, count); });
      bar.addEventListener("mouseleave", function () { $("histogram-tip").hidden = true; });
      bar.addEventListener("click", function () {
        $("histogram-tip").hidden = true;
        selectBin(SCORE_KEYS.indexOf(key), split, edges, bin);
      });
      svg.appendChild(bar);
    });
    return svg;
  }

  function showBinTip(event, key, edges, bin, count) {
    var tip = $("histogram-tip");
    var last = bin === edges.length - 2;
    tip.textContent = key + " in [" + fmt(edges[bin], 4) + ", " + fmt(edges[bin + 1], 4) + (last ? "]" : ")") +
      "\n" + count + " of " + SUMMARY.report[state.distributionSplit].n + " questions (" + state.distributionSplit + ")" +
      "\nclick: list these questions";
    var box = tip.parentNode.getBoundingClientRect();
    tip.style.left = (event.clientX - box.left + 14) + "px";
    tip.style.top = (event.clientY - box.top + 14) + "px";
    tip.hidden = false;
  }

  function renderHistograms() {
    var grid = clear($("histogram-grid"));
    // Only the columns the page can filter on: a score of the table.
    SUMMARY.columns.filter(function (key) { return SCORE_KEYS.indexOf(key) >= 0; })
      .forEach(function (key) { grid.appendChild(histogram(key)); });
  }

  function setupDistributions() {
    $("summary-labels").remove();
    $("summary-distributions").hidden = false;
    var select = $("distribution-split");
    distributionSplits().forEach(function (s) { select.appendChild(el("option", { value: s, text: s })); });
    state.distributionSplit = SUMMARY.report.all ? "all" : distributionSplits()[0];
    select.value = state.distributionSplit;
    select.addEventListener("change", function () {
      state.distributionSplit = select.value;
      renderDistributionTable();
      renderHistograms();
    });
    renderDistributionSplits();
    renderDistributionTable();
  }

  // ---------------------------------------------------------------- settings and provenance

  function renderSettings() {
    var provenance = DATA.provenance;
    var headline = el("table", { className: "grid", id: "headline-table" },
      [el("tr", {}, [el("th", { text: "setting" }), el("th", { text: "value" }), el("th", { text: "from" })])]);
    provenance.headline.forEach(function (row) {
      headline.appendChild(el("tr", {}, [el("td", { text: row[0] }), el("td", { text: showValue(row[1]) }),
                                         el("td", { className: "muted", text: row[2] })]));
    });
    clear($("headline")).appendChild(headline);

    // One column per distinct set of versions: a run made in one environment shows one column.
    var manifests = provenance.manifests;
    var groups = [];
    manifests.forEach(function (m) {
      var signature = JSON.stringify(m.versions || {});
      var group = groups.find(function (g) { return g.signature === signature; });
      if (!group) groups.push(group = { signature: signature, versions: m.versions || {}, tools: [] });
      var tool = String(m.tool || "?").replace("semantic_entropy.", "");
      if (group.tools.indexOf(tool) < 0) group.tools.push(tool);
    });
    var keys = [];
    groups.forEach(function (g) { Object.keys(g.versions).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); }); });
    var versions = el("table", { className: "grid", id: "versions-table" },
      [el("tr", {}, [el("th", { text: "" })].concat(groups.map(function (g) { return el("th", { text: g.tools.join(", ") }); })))]);
    keys.forEach(function (k) {
      versions.appendChild(el("tr", {}, [el("th", { text: k })].concat(groups.map(function (g) {
        return el("td", { text: showValue(g.versions[k]) });
      }))));
    });
    clear($("versions")).appendChild(versions);

    var run = DATA.run;
    var files = el("table", { className: "grid" });
    [["run folder", run.runDir], ["evaluation", run.evalDir], ["generations", run.generations]]
      .concat(run.uncertainty.map(function (u) { return ["uncertainty (" + u[0] + ")", u[1]]; }))
      .concat(run.attentionDir ? [["attention", run.attentionDir]] : [])
      .concat([["page built", run.built]])
      .forEach(function (r) { files.appendChild(el("tr", {}, [el("th", { text: r[0] }), el("td", { text: r[1] })])); });
    clear($("files")).appendChild(files);

    var list = clear($("manifests"));
    manifests.forEach(function (m) {
      list.appendChild(el("details", {}, [
        el("summary", { text: (m.tool || "?") + " \u2014 " + m.path + " (" + (m.status || "?") + ", " +
                              (m.records === null || m.records === undefined ? "?" : m.records) + " records, " + (m.created || "") + ")" }),
        el("pre", { className: "manifest", text: JSON.stringify(m, null, 1) })
      ]));
    });
    var notes = clear($("notes"));
    (DATA.notes || []).forEach(function (note) { notes.appendChild(el("p", { className: "note", text: "note: " + note })); });
  }

  function runLine() {
    var headline = {};
    DATA.provenance.headline.forEach(function (row) { headline[row[0]] = row[1]; });
    var parts = [N + " questions"];
    if (headline.model) parts.push("model " + String(headline.model).split("/").pop());
    if (headline["samples per question"] !== undefined) {
      parts.push(headline["samples per question"] + " samples at T=" + headline["sampling temperature"]);
    }
    if (headline.judge) parts.push("judge " + headline.judge);
    if (!LABELLED) parts.push("no labels: score distributions");
    if (DATA.attention) parts.push("attention for " + DATA.attention.questions + " questions");
    $("run-line").textContent = parts.join(" \u00b7 ");
  }

  // ---------------------------------------------------------------- tabs, keys, start

  var summaryReady = false;
  function showPanel(id) {
    Array.prototype.forEach.call(document.querySelectorAll(".tab"), function (tab) {
      tab.classList.toggle("active", tab.getAttribute("data-panel") === id);
    });
    Array.prototype.forEach.call(document.querySelectorAll(".panel"), function (panel) {
      panel.classList.toggle("active", panel.id === id);
    });
    if (id === "panel-summary" && !summaryReady) { summaryReady = true; (LABELLED ? renderCurves : renderHistograms)(); }
    if (id === "panel-questions") renderRows();
  }

  function setupKeys() {
    scroller.addEventListener("keydown", function (event) {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      event.preventDefault();
      if (!state.view.length) return;
      var position = positionInView(state.selected);
      position = position < 0 ? 0 : Math.max(0, Math.min(state.view.length - 1,
        position + (event.key === "ArrowDown" ? 1 : -1)));
      select(state.view[position]);
    });
  }

  function start() {
    buildHead();
    setupFilters();
    setupKeys();
    scroller.addEventListener("scroll", renderRows, { passive: true });
    window.addEventListener("resize", renderRows);
    body.addEventListener("click", function (event) {
      var row = event.target.closest(".vrow");
      if (row) select(Number(row.getAttribute("data-index")), true);
    });
    Array.prototype.forEach.call(document.querySelectorAll(".tab"), function (tab) {
      tab.addEventListener("click", function () { showPanel(tab.getAttribute("data-panel")); });
    });
    refresh();
    // The benchmark reads this: the table is on screen and answers input from here on.
    window.reportTimings = { firstRender: performance.now() };
    runLine();
    if (LABELLED) {
      setupSummary();
      setupCurves();
    } else {
      setupDistributions();
    }
    renderSettings();
    var match = /^#q=(.*)$/.exec(location.hash);
    if (match) {
      var wanted = decodeURIComponent(match[1]);
      var i = R.id.indexOf(wanted);
      if (i >= 0) select(i);
    }
    window.reportTimings.ready = performance.now();
  }

  start();
})();
