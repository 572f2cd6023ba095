/* scalecap report page. Written for scalecap; no library, no network.
 * All text that comes from the run is put into the page with textContent / createTextNode only.
 * Data: the JSON block #scalecap-data; in the folder layout also <files>/scores.js, search.js and
 * chunks/cNNNNN.js, loaded as script elements with a relative src (they call the
 * window.scalecapReport* functions). */
(function () {
  "use strict";

  const SVGNS = "http://www.w3.org/2000/svg";
  const STATUS = ["ok", "failed", "filtered", "rejected"];
  const LIST_MAX = 300;
  const CHUNK_CACHE = 48;

  const bootStart = performance.now();
  const D = JSON.parse(document.getElementById("scalecap-data").textContent);
  const IX = D.index;
  const OV = D.overview;
  const N = IX.ids.length;
  const FPS = OV.fingerprints || [];
  const FOLDER = D.layout === "folder";

  const api = window.scalecapReport = {
    ready: { cards: false, scores: false, search: false },
    marks: { boot: bootStart, parsed: performance.now() },
    timing: {},
    errors: [],
    layout: D.layout,
    chunkSize: D.chunk_size,
  };

  // ------------------------------------------------------------------ small DOM helpers
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function txt(s) { return document.createTextNode(s === undefined || s === null ? "" : String(s)); }
  function add(parent) {
    for (let i = 1; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      parent.appendChild(typeof c === "string" ? txt(c) : c);
    }
    return parent;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmtInt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
  function fmtNum(x, d) {
    if (x === null || x === undefined || !isFinite(x)) return "n/a";
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return String(Number(x.toPrecision(d || 4)));
  }
  function fmtScore(s, t) {
    // 4 significant digits, more when rounding would put the score on the other side of tau
    if (s === null || s === undefined || !isFinite(s)) return "n/a";
    let str = fmtNum(s, 4);
    if (t !== null && t !== undefined && (Number(str) > t) !== (s > t)) {
      for (let d = 6; d <= 17; d += 1) {
        str = String(Number(s.toPrecision(d)));
        if ((Number(str) > t) === (s > t)) break;
      }
    }
    return str;
  }
  function fmtUSD(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "$0";
    if (x < 0.01) return "$" + x.toPrecision(2);
    return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  function fmtCompact(n) {
    const a = Math.abs(n);
    if (a >= 1e9) return Number((n / 1e9).toPrecision(3)) + "G";
    if (a >= 1e6) return Number((n / 1e6).toPrecision(3)) + "M";
    if (a >= 1e4) return Number((n / 1e3).toPrecision(3)) + "k";
    return fmtInt(n);
  }
  function fmtSeconds(x) { return x === null || x === undefined ? "–" : (x >= 1000 ? fmtInt(Math.round(x)) : fmtNum(x, 4)); }
  function debounce(fn, ms) {
    let t = null;
    return function () { if (t) clearTimeout(t); t = setTimeout(() => { t = null; fn(); }, ms); };
  }
  function tile(key, label, value, cls) {
    const t = el("div", "tile" + (cls ? " " + cls : ""));
    t.dataset.stat = key;
    add(t, el("div", "k", label), el("div", "v", value));
    return t;
  }
  function table(headers, rows, numeric) {
    const t = el("table");
    const tr = el("tr");
    headers.forEach((h, i) => tr.appendChild(el("th", numeric && numeric[i] ? "n" : "", h)));
    add(t, add(el("thead"), tr));
    const tb = el("tbody");
    rows.forEach((r) => {
      const row = el("tr");
      r.forEach((c, i) => {
        const td = el("td", numeric && numeric[i] ? "n" : "");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
        row.appendChild(td);
      });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.async = true;
      s.onload = () => { s.remove(); resolve(); };
      s.onerror = () => { s.remove(); reject(new Error("cannot load " + src)); };
      document.head.appendChild(s);
    });
  }
  function safeHref(h) {
    return typeof h === "string" && /^(https?:\/\/|file:\/\/)/i.test(h) ? h : null;
  }
  function thumbSrc(k) {
    if (typeof k !== "number" || !(k >= 0)) return null;
    if (!FOLDER) {
      const u = D.thumbs && D.thumbs[k];
      return typeof u === "string" && u.indexOf("data:image/jpeg;base64,") === 0 ? u : null;
    }
    return D.files + "thumbs/t" + Math.floor(k) + ".jpg";
  }

  // ------------------------------------------------------------------ per-record score mode
  const modes = [];
  const modeOfFp = FPS.map((f) => {
    let m = modes.indexOf(f.score_mode);
    if (m < 0) { m = modes.length; modes.push(f.score_mode); }
    return m;
  });
  const recMode = new Int8Array(N);
  for (let i = 0; i < N; i++) recMode[i] = IX.fp[i] >= 0 ? modeOfFp[IX.fp[i]] : -1;
  const modeCounts = modes.map(() => 0);
  for (let i = 0; i < N; i++) if (recMode[i] >= 0) modeCounts[recMode[i]]++;
  function runTaus(m) {
    const out = [];
    FPS.forEach((f, i) => { if (modeOfFp[i] === m && f.tau !== null && out.indexOf(f.tau) < 0) out.push(f.tau); });
    return out;
  }

  // ------------------------------------------------------------------ state
  const state = {
    q: "", status: -1, reason: -1, rmin: 0, rmax: 1, flipsOnly: false, sort: "file",
    corr: "", dom: -2, ocr: "", fh: "",
    page: 0, pageSize: D.page_size || 25, focus: -1, focusSent: null,
  };
  let scores = null; // {cap:{off,s,k}, ans:{off,s,k,q}}
  let search = null;
  let matches = [];
  const tau = {
    mode: modes.length ? modeCounts.indexOf(Math.max.apply(null, modeCounts)) : -1,
    value: null, base: null,
    flipRec: new Uint8Array(N), lastTotal: 0,
    capKD: 0, capDK: 0, ansKD: 0, ansDK: 0,
  };

  // ------------------------------------------------------------------ record access (chunks)
  const chunks = new Map();
  const chunkWaiters = new Map();
  window.scalecapReportChunk = function (n, recs) {
    chunks.set(n, recs);
    const w = chunkWaiters.get(n);
    if (w) { chunkWaiters.delete(n); w.resolve(); }
  };
  window.scalecapReportScores = function (s) { api._scores = s; };
  window.scalecapReportSearch = function (s) { api._search = s; };

  function loadChunk(n) {
    if (chunks.has(n)) {
      const recs = chunks.get(n); chunks.delete(n); chunks.set(n, recs); // LRU touch
      return Promise.resolve();
    }
    if (chunkWaiters.has(n)) return chunkWaiters.get(n).promise;
    let resolve, reject;
    const promise = new Promise((a, b) => { resolve = a; reject = b; });
    chunkWaiters.set(n, { promise, resolve, reject });
    const name = "c" + String(n).padStart(5, "0") + ".js";
    loadScript(D.files + "chunks/" + name).then(() => {
      if (chunkWaiters.has(n)) { chunkWaiters.delete(n); reject(new Error("chunk " + n + " did not register")); }
    }, (e) => { chunkWaiters.delete(n); reject(e); });
    return promise;
  }
  function trimChunks(keep) {
    for (const k of chunks.keys()) {
      if (chunks.size <= CHUNK_CACHE) break;
      if (!keep.has(k)) chunks.delete(k);
    }
  }
  function records(seqs) {
    if (!FOLDER) return Promise.resolve(seqs.map((i) => D.records[i]));
    const cs = D.chunk_size;
    const need = new Set(seqs.map((i) => Math.floor(i / cs)));
    return Promise.all(Array.from(need).map(loadChunk)).then(() => {
      trimChunks(need);
      return seqs.map((i) => chunks.get(Math.floor(i / cs))[i % cs]);
    });
  }

  // ------------------------------------------------------------------ page skeleton
  const app = document.getElementById("app");
  clear(app);
  const header = el("header");
  add(header, el("h1", null, D.title));
  const fpLine = FPS.length
    ? FPS.map((f) => f.score_mode + " τ=" + fmtNum(f.tau) + " · budget " + (f.budget === null ? "all" : f.budget) +
      " · " + Object.keys(f.models).map((r) => r + ": " + f.models[r]).join(", ")).join(" | ")
    : "no fingerprint in the records";
  add(header, el("div", "sub", "Run file " + D.run + " · generated " + D.generated + " · " +
    (FOLDER ? "folder layout (" + D.files + ")" : "single file") + " · " + fpLine));
  app.appendChild(header);

  const secOverview = el("section", "panel"); secOverview.id = "overview";
  const secTau = el("section", "panel"); secTau.id = "tau";
  const secImages = el("section", "panel"); secImages.id = "images";
  const secBad = el("section", "panel"); secBad.id = "unreadable";
  const EVALS = D.evaluations || [];
  const secEval = el("section", "panel"); secEval.id = "evaluation";
  add(app, secOverview);
  if (EVALS.length) app.appendChild(secEval);
  add(app, secTau, secImages);
  if (OV.unreadable) app.appendChild(secBad);

  // ------------------------------------------------------------------ overview
  let scoreChart = null;
  function renderOverview() {
    add(secOverview, el("h2", null, "Overview"));
    const tiles = el("div", "tiles");
    const toks = OV.stages.reduce((a, s) => a + s.prompt + s.completion, 0);
    add(tiles,
      tile("records", "Images", fmtInt(OV.records)),
      tile("ok", "Captioned", fmtInt(OV.ok), "good"),
      tile("failed", "Failed", fmtInt(OV.failed), OV.failed ? "bad" : ""),
      tile("filtered", "Filtered", fmtInt(OV.filtered), OV.filtered ? "warn" : ""),
      tile("rejected", "Rejected by the judge", fmtInt(OV.rejected || 0), OV.rejected ? "warn" : ""),
      tile("unreadable", "Unreadable lines", fmtInt(OV.unreadable), OV.unreadable ? "bad" : ""),
      tile("sentences", "Caption sentences kept", fmtInt(OV.sentences_kept) + " / " + fmtInt(OV.sentences)),
      tile("questions", "Questions kept", fmtInt(OV.questions_kept) + " / " + fmtInt(OV.questions)),
      tile("fallbacks", "Caption fallbacks", fmtInt(OV.fallbacks), OV.fallbacks ? "warn" : ""),
      tile("tokens", "Tokens", fmtInt(toks)),
      OV.prices_given ? tile("cost", "Cost" + (OV.unpriced.length ? " (partial)" : ""), fmtUSD(OV.total_cost)) : null);
    secOverview.appendChild(tiles);

    const grid = el("div", "grid2");
    // failures and filtered
    const fbox = el("div");
    add(fbox, el("h4", null, "Failures by reason"));
    if (OV.failures.length) {
      const t = table(["error kind", "images"], OV.failures.map((r) => [r[0], fmtInt(r[1])]), [0, 1]);
      Array.from(t.tBodies[0].rows).forEach((row, i) => {
        row.className = "click"; row.title = "Show these images";
        row.addEventListener("click", () => setFilter(1, OV.failures[i][0]));
      });
      fbox.appendChild(t);
    } else fbox.appendChild(el("div", "muted", "No failures."));
    add(fbox, el("h4", null, "Filtered images by reason"));
    if (OV.filtered_reasons.length) {
      const t = table(["filter reason", "images"], OV.filtered_reasons.map((r) => [r[0], fmtInt(r[1])]), [0, 1]);
      Array.from(t.tBodies[0].rows).forEach((row, i) => {
        row.className = "click"; row.title = "Show these images";
        row.addEventListener("click", () => setFilter(2, OV.filtered_reasons[i][0]));
      });
      fbox.appendChild(t);
    } else fbox.appendChild(el("div", "muted", "No filtered images."));
    grid.appendChild(fbox);

    // tokens and cost per stage
    const sbox = el("div");
    add(sbox, el("h4", null, "Tokens" + (OV.prices_given ? " and cost" : "") + " per stage"));
    const heads = ["stage", "calls", "prompt tokens", "completion tokens"];
    const num = [0, 1, 1, 1];
    if (OV.prices_given) { heads.push("cost (USD)"); num.push(1); }
    const rows = OV.stages.map((s) => {
      const r = [s.stage, fmtInt(s.calls), fmtInt(s.prompt), fmtInt(s.completion)];
      if (OV.prices_given) r.push(s.cost === null ? "no price" : fmtUSD(s.cost));
      return r;
    });
    const tot = ["total", fmtInt(OV.stages.reduce((a, s) => a + s.calls, 0)),
      fmtInt(OV.stages.reduce((a, s) => a + s.prompt, 0)), fmtInt(OV.stages.reduce((a, s) => a + s.completion, 0))];
    if (OV.prices_given) tot.push(fmtUSD(OV.total_cost));
    rows.push(tot);
    const st = table(heads, rows, num);
    st.id = "stage-table";
    st.tBodies[0].rows[rows.length - 1].className = "total";
    sbox.appendChild(st);
    if (!OV.stages.length) sbox.appendChild(el("div", "muted", "No usage recorded."));
    if (OV.prices_given) {
      const p = OV.prices;
      const parts = Object.keys(p.by_name).map((k) => k + " " + p.by_name[k].prompt + "/" + p.by_name[k].completion);
      if (p.default) parts.push("other stages " + p.default.prompt + "/" + p.default.completion);
      sbox.appendChild(el("div", "sub", "Prices in USD per 1M prompt/completion tokens: " + parts.join(", ") +
        (OV.unpriced.length ? ". No price for: " + OV.unpriced.join(", ") : "")));
    } else {
      sbox.appendChild(el("div", "sub", "No prices given: pass --price STAGE=PROMPT:COMPLETION (USD per 1M tokens) to see costs."));
    }
    if (OV.timings.length) {
      add(sbox, el("h4", null, "Time per stage"));
      sbox.appendChild(table(["stage", "mean s / image", "total s", "images"],
        OV.timings.map((t) => [t.stage, fmtNum(t.mean, 3), fmtSeconds(t.total), fmtInt(t.n)]), [0, 1, 1, 1]));
    }
    grid.appendChild(sbox);
    secOverview.appendChild(grid);

    // charts
    add(secOverview, el("h4", null, "Distributions"));
    const charts = el("div", "charts");
    scoreChart = el("div", "chart"); scoreChart.id = "chart-scores";
    charts.appendChild(scoreChart);
    drawScoreChart();
    charts.appendChild(chartBox("chart-ratio", "Kept-sentence ratio per image", OV.hist.kept_ratio, "images"));
    charts.appendChild(chartBox("chart-words", "Final caption length (words)", OV.hist.caption_words, "images"));
    charts.appendChild(chartBox("chart-tokens", "Tokens per image (all stages)", OV.hist.tokens_per_image, "images"));
    secOverview.appendChild(charts);

    if (FPS.length) {
      add(secOverview, el("h4", null, "Settings (fingerprints)"));
      secOverview.appendChild(table(["fingerprint", "score mode", "τ", "budget", "tagger", "models", "images"],
        FPS.map((f) => [f.id, f.score_mode, fmtNum(f.tau), f.budget === null ? "all" : f.budget, f.tagger,
          Object.keys(f.models).map((r) => r + ": " + f.models[r]).join("; "), fmtInt(f.count)]),
        [0, 0, 1, 1, 0, 0, 1]));
    }
  }

  // ------------------------------------------------------------------ evaluation results (scalecap eval)
  function renderEvaluations() {
    add(secEval, el("h2", null, "Evaluation"));
    EVALS.forEach((e) => {
      add(secEval, el("h4", null, e.metric + " (" + e.rows.length + " result file" + (e.rows.length === 1 ? "" : "s") + ")"));
      const t = table(e.cols, e.rows.map((r) => r.map((v) => v === null ? "–" : v)), e.cols.map((_, i) => i > 0));
      t.dataset.metric = e.metric;
      secEval.appendChild(t);
      secEval.appendChild(el("div", "sub", e.label + " · from " + e.files.join(", ")));
    });
  }

  function chartBox(id, title, h, unit, tauLine) {
    const box = el("div", "chart");
    box.id = id;
    drawHist(box, title, h, unit, tauLine);
    return box;
  }
  function drawHist(box, title, h, unit, tauLine) {
    clear(box);
    box.appendChild(el("div", "ct", title));
    if (!h || !h.counts || !h.counts.length) { box.appendChild(el("div", "empty", "no data")); return null; }
    const W = 300, H = 150, L = 36, R = 8, T = 10, B = 26;
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    const max = Math.max.apply(null, h.counts) || 1;
    const lo = h.edges[0], hi = h.edges[h.edges.length - 1];
    const x = (v) => L + (W - L - R) * (v - lo) / (hi - lo || 1);
    const y = (c) => T + (H - T - B) * (1 - c / max);
    s.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9aa3b2" }));
    s.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#9aa3b2" }));
    h.counts.forEach((c, i) => {
      const x0 = x(h.edges[i]), x1 = x(h.edges[i + 1]);
      const r = svg("rect", { x: x0 + 0.5, y: y(c), width: Math.max(0.5, x1 - x0 - 1), height: H - B - y(c), fill: "#5b82c9" });
      const tt = svg("title", {});
      tt.textContent = "[" + fmtNum(h.edges[i]) + ", " + fmtNum(h.edges[i + 1]) + "): " + c;
      r.appendChild(tt);
      s.appendChild(r);
    });
    const label = (xx, yy, t, anchor) => {
      const e = svg("text", { x: xx, y: yy, "font-size": 10, fill: "#5d6678", "text-anchor": anchor || "middle" });
      e.textContent = t; s.appendChild(e);
    };
    label(L, H - B + 13, (h.below ? "≤" : "") + fmtNum(lo, 3), "start");
    label((L + W - R) / 2, H - B + 13, fmtNum((lo + hi) / 2, 3));
    label(W - R, H - B + 13, (h.above ? "≥" : "") + fmtNum(hi, 3), "end");
    label(L - 4, T + 8, fmtCompact(max), "end");
    label(L - 4, H - B, "0", "end");
    label((L + W - R) / 2, H - 2, fmtInt(h.counts.reduce((a, b) => a + b, 0)) + " " + unit);
    let line = null;
    if (tauLine !== undefined && tauLine !== null) {
      line = svg("g", {});
      const ln = svg("line", { y1: T - 4, y2: H - B, stroke: "#b3261e", "stroke-width": 2, "stroke-dasharray": "4 2" });
      const lt = svg("text", { y: T + 2, "font-size": 10, fill: "#b3261e", "text-anchor": "start" });
      line.appendChild(ln); line.appendChild(lt);
      s.appendChild(line);
      line.update = (v) => {
        const xx = Math.min(W - R, Math.max(L, x(v)));
        ln.setAttribute("x1", xx); ln.setAttribute("x2", xx);
        lt.setAttribute("x", xx + 3 > W - 40 ? xx - 40 : xx + 3);
        lt.textContent = "τ=" + fmtNum(v, 3);
      };
      line.update(tauLine);
    }
    box.appendChild(s);
    return line;
  }
  let tauLine = null;
  function drawScoreChart() {
    const m = tau.mode;
    const name = m >= 0 ? modes[m] : null;
    const h = name ? OV.score_hist[name] : null;
    const t = tau.value !== null ? tau.value : (m >= 0 ? runTaus(m)[0] : null);
    tauLine = drawHist(scoreChart, "Sentence scores" + (name ? " (" + name + ")" : ""), h, "sentences", t);
  }

  // ------------------------------------------------------------------ tau control
  const tauUI = {};
  function renderTauPanel() {
    add(secTau, el("h2", null, "Threshold τ"));
    const intro = el("div", "sub",
      "Re-applies the threshold to the stored sentence scores (a sentence is kept iff score > τ) and shows which decisions would change. Nothing is re-run.");
    secTau.appendChild(intro);
    if (tau.mode < 0) { secTau.appendChild(el("div", "muted", "No scored records in this run.")); return; }
    const row = el("div", "taurow controls");
    if (modes.length > 1) {
      const lab = el("label", null, "score mode");
      const sel = el("select");
      modes.forEach((m, i) => { const o = el("option", null, m + " (" + modeCounts[i] + " images)"); o.value = String(i); sel.appendChild(o); });
      sel.value = String(tau.mode);
      sel.addEventListener("change", () => { tau.mode = Number(sel.value); resetTau(); });
      lab.appendChild(sel);
      row.appendChild(lab);
    }
    const sl = el("input"); sl.type = "range"; sl.id = "tau-slider"; sl.setAttribute("aria-label", "tau");
    const nb = el("input"); nb.type = "number"; nb.id = "tau-number"; nb.step = "any"; nb.setAttribute("aria-label", "tau value");
    const rb = el("button", null, "Reset to the run's τ"); rb.type = "button"; rb.id = "tau-reset";
    const lab1 = el("label", null, "τ"); lab1.appendChild(sl);
    const lab2 = el("label", null, "value"); lab2.appendChild(nb);
    add(row, lab1, lab2, rb);
    secTau.appendChild(row);
    tauUI.slider = sl; tauUI.number = nb;
    tauUI.info = el("div", "sub");
    secTau.appendChild(tauUI.info);
    tauUI.stats = el("div", "flipstats");
    secTau.appendChild(tauUI.stats);
    tauUI.list = el("ol", "fliplist"); tauUI.list.id = "flip-list";
    tauUI.more = el("div", "sub");
    add(secTau, tauUI.list, tauUI.more);
    const onSlide = debounce(() => applyTau(), 40);
    sl.addEventListener("input", () => { tau.value = Number(sl.value); nb.value = sl.value; if (tauLine) tauLine.update(tau.value); onSlide(); });
    nb.addEventListener("input", () => {
      const v = Number(nb.value);
      if (nb.value === "" || !isFinite(v)) return;
      tau.value = v; sl.value = String(v); if (tauLine) tauLine.update(v); onSlide();
    });
    rb.addEventListener("click", resetTau);
    if (!scores) {
      sl.disabled = nb.disabled = rb.disabled = true;
      tauUI.info.textContent = "Loading sentence scores…";
    }
    resetTau(true);
  }
  function resetTau(quiet) {
    const m = tau.mode;
    const taus = runTaus(m);
    tau.base = taus.length ? taus[0] : 0;
    tau.value = tau.base;
    const h = OV.score_hist[modes[m]];
    let lo = h && h.edges.length ? h.edges[0] : tau.base - 1;
    let hi = h && h.edges.length ? h.edges[h.edges.length - 1] : tau.base + 1;
    lo = Math.min(lo, tau.base); hi = Math.max(hi, tau.base);
    if (hi <= lo) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.05; // so that tau can pass the lowest and the highest score
    lo -= pad; hi += pad;
    // a round step (so the run's tau and typed values sit on the slider's grid)
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 200)));
    const dec = Math.max(0, -Math.floor(Math.log10(step)));
    lo = Number((Math.floor(lo / step) * step).toFixed(dec));
    hi = Number((Math.ceil(hi / step) * step).toFixed(dec));
    const sl = tauUI.slider;
    if (sl) {
      sl.min = String(lo); sl.max = String(hi); sl.step = String(step);
      sl.value = String(tau.value);
      tauUI.number.value = String(tau.value);
    }
    drawScoreChart();
    if (!quiet || scores) applyTau();
    if (taus.length > 1 && tauUI.info) tauUI.info.textContent = "Records of this mode were rated with τ = " + taus.map((t) => fmtNum(t)).join(", ") + "; flips are counted against each sentence's stored decision.";
  }
  function applyTau() {
    if (!scores || tau.mode < 0) return;
    const t0 = performance.now();
    const t = tau.value, m = tau.mode;
    const fr = tau.flipRec;
    fr.fill(0);
    const items = [];
    let capKD = 0, capDK = 0, ansKD = 0, ansDK = 0, keptBefore = 0, keptNow = 0, scored = 0;
    let noneBefore = 0, noneNow = 0, ansKeptBefore = 0, ansKeptNow = 0, ansScored = 0;
    const C = scores.cap, A = scores.ans;
    for (let r = 0; r < N; r++) {
      if (recMode[r] !== m) continue;
      const a0 = C.off[r], a1 = C.off[r + 1];
      let kb = 0, kn = 0;
      for (let j = a0; j < a1; j++) {
        const s = C.s[j], was = C.k[j] === 1, now = s > t;
        if (s === s) scored++;
        if (was) kb++;
        if (now) kn++;
        if (was !== now) {
          fr[r] = 1;
          if (was) capKD++; else capDK++;
          if (items.length < LIST_MAX) items.push([r, "c", j - a0, s, was]);
        }
      }
      keptBefore += kb; keptNow += kn;
      if (a1 > a0 && IX.status[r] === 0) { if (kb === 0) noneBefore++; if (kn === 0) noneNow++; }
      const b0 = A.off[r], b1 = A.off[r + 1];
      let prevQ = -1, si = 0;
      for (let j = b0; j < b1; j++) {
        const q = A.q[j];
        si = q === prevQ ? si + 1 : 0; prevQ = q;
        const s = A.s[j], was = A.k[j] === 1, now = s > t;
        if (s === s) ansScored++;
        if (was) ansKeptBefore++;
        if (now) ansKeptNow++;
        if (was !== now) {
          fr[r] = 1;
          if (was) ansKD++; else ansDK++;
          if (items.length < LIST_MAX) items.push([r, "a", q + "." + si, s, was]);
        }
      }
    }
    tau.capKD = capKD; tau.capDK = capDK; tau.ansKD = ansKD; tau.ansDK = ansDK;
    api.tau = { value: t, mode: modes[m], capKD, capDK, ansKD, ansDK, keptBefore, keptNow, noneBefore, noneNow };
    api.timing.tau = performance.now() - t0;
    const S = tauUI.stats;
    clear(S);
    add(S,
      tile("flip-kd", "Caption sentences kept → dropped", fmtInt(capKD), capKD ? "bad" : ""),
      tile("flip-dk", "Caption sentences dropped → kept", fmtInt(capDK), capDK ? "good" : ""),
      tile("kept-now", "Caption sentences kept (run → now)", fmtInt(keptBefore) + " → " + fmtInt(keptNow) + " of " + fmtInt(scored) + " scored"),
      tile("fallback-now", "Images with no kept sentence (run → now)", fmtInt(noneBefore) + " → " + fmtInt(noneNow)),
      tile("flip-ans-kd", "Answer sentences kept → dropped", fmtInt(ansKD), ansKD ? "bad" : ""),
      tile("flip-ans-dk", "Answer sentences dropped → kept", fmtInt(ansDK), ansDK ? "good" : ""),
      tile("ans-kept-now", "Answer sentences kept (run → now)", fmtInt(ansKeptBefore) + " → " + fmtInt(ansKeptNow) + " of " + fmtInt(ansScored) + " scored"));
    const L = tauUI.list;
    clear(L);
    items.forEach((it) => {
      const li = el("li");
      const a = el("a");
      a.href = "#r=" + it[0] + "&s=" + it[1] + it[2];
      const where = it[1] === "c" ? "sentence " + (it[2] + 1) : "answer " + (Number(String(it[2]).split(".")[0]) + 1) + ", sentence " + (Number(String(it[2]).split(".")[1]) + 1);
      add(a, IX.ids[it[0]] + " · " + where + " · score " + fmtScore(it[3], t));
      add(li, a, " ", el("span", it[4] ? "dir-kd" : "dir-dk", it[4] ? "kept → dropped" : "dropped → kept"));
      L.appendChild(li);
    });
    const total = capKD + capDK + ansKD + ansDK;
    tauUI.more.textContent = total > items.length ? "… and " + fmtInt(total - items.length) + " more (use “only images with flips” below to page through them)." :
      (total ? "" : "No decision changes at τ = " + fmtNum(t) + ".");
    const changed = total > 0 || tau.lastTotal > 0;
    tau.lastTotal = total;
    if (state.flipsOnly) refresh(); else if (changed && api.ready.cards) rerenderCards();
  }

  // ------------------------------------------------------------------ image list controls
  const ui = {};
  function renderControls() {
    add(secImages, el("h2", null, "Images"));
    const c = el("div", "controls");
    const mk = (label, node) => { const l = el("label", null, label); l.appendChild(node); c.appendChild(l); return node; };
    ui.q = mk("search", el("input")); ui.q.type = "search"; ui.q.id = "search";
    ui.q.placeholder = "id, caption words, object, error…";
    ui.status = mk("status", el("select")); ui.status.id = "f-status";
    [["-1", "all"], ["0", "ok"], ["1", "failed"], ["2", "filtered"], ["3", "rejected"]].forEach((o) => { const e = el("option", null, o[1]); e.value = o[0]; ui.status.appendChild(e); });
    ui.reason = mk("reason", el("select")); ui.reason.id = "f-reason";
    const o0 = el("option", null, "any"); o0.value = "-1"; ui.reason.appendChild(o0);
    D.reasons.forEach((r, i) => { const e = el("option", null, r); e.value = String(i); ui.reason.appendChild(e); });
    ui.rmin = mk("kept ratio ≥", el("input")); ui.rmin.type = "number"; ui.rmin.min = "0"; ui.rmin.max = "1"; ui.rmin.step = "0.05"; ui.rmin.value = "0"; ui.rmin.id = "f-rmin";
    ui.rmax = mk("kept ratio ≤", el("input")); ui.rmax.type = "number"; ui.rmax.min = "0"; ui.rmax.max = "1"; ui.rmax.step = "0.05"; ui.rmax.value = "1"; ui.rmax.id = "f-rmax";
    ui.sort = mk("order", el("select")); ui.sort.id = "f-sort";
    [["file", "run order"], ["ratio-asc", "kept ratio ↑"], ["ratio-desc", "kept ratio ↓"], ["tokens-desc", "tokens ↓"], ["words-desc", "caption length ↓"]]
      .forEach((o) => { const e = el("option", null, o[1]); e.value = o[0]; ui.sort.appendChild(e); });
    ui.ps = mk("per page", el("select")); ui.ps.id = "f-pagesize";
    [10, 25, 50, 100].forEach((n) => { const e = el("option", null, String(n)); e.value = String(n); ui.ps.appendChild(e); });
    ui.ps.value = String(state.pageSize);
    filterSelects(mk);
    const fl = el("label", "inline");
    ui.flips = el("input"); ui.flips.type = "checkbox"; ui.flips.id = "f-flips";
    add(fl, ui.flips, "only images with flips at current τ");
    c.appendChild(fl);
    const reset = el("button", null, "Clear filters"); reset.type = "button";
    c.appendChild(reset);
    secImages.appendChild(c);
    ui.searchNote = el("div", "sub");
    secImages.appendChild(ui.searchNote);

    ui.bar = el("div", "resultbar");
    ui.count = el("div"); ui.count.id = "result-count";
    ui.pager = el("div", "pager");
    add(ui.bar, ui.count, ui.pager);
    ui.focusBar = el("div", "banner hidden");
    ui.cards = el("div"); ui.cards.id = "cards";
    ui.bar2 = el("div", "resultbar");
    ui.pager2 = el("div", "pager");
    ui.bar2.appendChild(el("div"));
    ui.bar2.appendChild(ui.pager2);
    add(secImages, ui.bar, ui.focusBar, ui.cards, ui.bar2);

    const onText = debounce(() => { state.q = ui.q.value; state.page = 0; refresh(); }, 180);
    ui.q.addEventListener("input", onText);
    ui.status.addEventListener("change", () => { state.status = Number(ui.status.value); state.page = 0; refresh(); });
    ui.reason.addEventListener("change", () => { state.reason = Number(ui.reason.value); state.page = 0; refresh(); });
    const onRange = debounce(() => {
      const a = Number(ui.rmin.value), b = Number(ui.rmax.value);
      state.rmin = ui.rmin.value === "" || !isFinite(a) ? 0 : a;
      state.rmax = ui.rmax.value === "" || !isFinite(b) ? 1 : b;
      state.page = 0; refresh();
    }, 180);
    ui.rmin.addEventListener("input", onRange);
    ui.rmax.addEventListener("input", onRange);
    ui.sort.addEventListener("change", () => { state.sort = ui.sort.value; state.page = 0; refresh(); });
    ui.ps.addEventListener("change", () => { state.pageSize = Number(ui.ps.value); state.page = 0; renderPage(); });
    ui.flips.addEventListener("change", () => { state.flipsOnly = ui.flips.checked; state.page = 0; refresh(); });
    reset.addEventListener("click", () => {
      ui.q.value = ""; ui.status.value = "-1"; ui.reason.value = "-1"; ui.rmin.value = "0"; ui.rmax.value = "1";
      ui.sort.value = "file"; ui.flips.checked = false;
      FILTERS.forEach((f) => { if (ui[f.key]) ui[f.key].value = String(f.all); });
      Object.assign(state, { q: "", status: -1, reason: -1, rmin: 0, rmax: 1, flipsOnly: false, sort: "file", page: 0,
        corr: "", dom: -2, ocr: "", fh: "" });
      refresh();
    });
  }
  // Filters on what a run may carry: self-correction, domain, OCR evidence, degenerate-output hits.
  // Each works on the page's per-image columns (IX.corr/dom/ocr/fh), so it needs no record loaded,
  // and is shown only when some image of the run has something to filter on.
  const CORR_RAN = 1, CORR_CHANGED = 2, CORR_REJECTED = 4;
  const DOMAINS = D.domains || [], HIT_CODES = D.hit_codes || [];
  const FILTERS = [
    { key: "corr", id: "f-corr", label: "correction", all: "", present: () => IX.corr.some((b) => b),
      options: () => [["changed", "caption changed"], ["rejected", "correction rejected"],
        ["unchanged", "ran, caption unchanged"], ["none", "not self-corrected"]],
      test: (v, i) => {
        const b = IX.corr[i];
        if (v === "changed") return (b & CORR_CHANGED) !== 0;
        if (v === "rejected") return (b & CORR_REJECTED) !== 0;
        if (v === "unchanged") return (b & CORR_RAN) !== 0 && (b & CORR_CHANGED) === 0;
        return b === 0;
      } },
    { key: "dom", id: "f-domain", label: "domain", all: -2, present: () => DOMAINS.length > 0,
      options: () => DOMAINS.map((d, k) => [String(k), d]).concat([["-1", "(none)"]]),
      test: (v, i) => IX.dom[i] === v },
    { key: "ocr", id: "f-ocr", label: "OCR", all: "", present: () => IX.ocr.some((x) => x),
      options: () => [["read", "OCR evidence"], ["unsupported", "unsupported quote"], ["none", "no OCR"]],
      test: (v, i) => (v === "read" ? IX.ocr[i] > 0 : v === "unsupported" ? IX.ocr[i] === 2 : IX.ocr[i] === 0) },
    { key: "fh", id: "f-hits", label: "filter hits", all: "", present: () => HIT_CODES.length > 0,
      options: () => [["any", "any hit"]].concat(HIT_CODES.map((c, k) => [String(k), c])).concat([["none", "no hit"]]),
      test: (v, i) => (v === "any" ? IX.fh[i].length > 0 : v === "none" ? IX.fh[i].length === 0 : IX.fh[i].indexOf(Number(v)) >= 0) },
  ];
  function filterSelects(mk) {
    FILTERS.forEach((f) => {
      if (!f.present()) return;
      const sel = mk(f.label, el("select")); sel.id = f.id; ui[f.key] = sel;
      const all = el("option", null, "all"); all.value = String(f.all); sel.appendChild(all);
      f.options().forEach((o) => {
        let n = 0;
        const v = typeof f.all === "number" ? Number(o[0]) : o[0];
        for (let i = 0; i < N; i++) if (f.test(v, i)) n++;
        const e = el("option", null, o[1] + " (" + fmtInt(n) + ")"); e.value = o[0]; sel.appendChild(e);
      });
      sel.addEventListener("change", () => {
        state[f.key] = typeof f.all === "number" ? Number(sel.value) : sel.value;
        state.page = 0; refresh();
      });
    });
  }
  function setFilter(status, reasonName) {
    state.status = status; ui.status.value = String(status);
    const r = D.reasons.indexOf(reasonName);
    state.reason = r; ui.reason.value = String(r);
    state.page = 0;
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    state.focus = -1;
    refresh();
    secImages.scrollIntoView();
  }

  function computeMatches() {
    const t0 = performance.now();
    const terms = state.q.toLowerCase().replace(/\s+/g, " ").trim().split(" ").filter((t) => t);
    const rangeOn = state.rmin > 0 || state.rmax < 1;
    const out = [];
    const st = IX.status, rs = IX.reason, ra = IX.ratio;
    const texts = search;
    const active = FILTERS.filter((f) => state[f.key] !== f.all);
    for (let i = 0; i < N; i++) {
      if (state.status >= 0 && st[i] !== state.status) continue;
      if (state.reason >= 0 && rs[i] !== state.reason) continue;
      if (rangeOn) { const r = ra[i]; if (r === null || r < state.rmin || r > state.rmax) continue; }
      if (state.flipsOnly && !tau.flipRec[i]) continue;
      if (active.length && !active.every((f) => f.test(state[f.key], i))) continue;
      if (terms.length) {
        const t = texts ? texts[i] : lowerIds[i];
        let ok = true;
        for (let k = 0; k < terms.length; k++) if (t.indexOf(terms[k]) < 0) { ok = false; break; }
        if (!ok) continue;
      }
      out.push(i);
    }
    const key = { "ratio-asc": IX.ratio, "ratio-desc": IX.ratio, "tokens-desc": IX.tokens, "words-desc": IX.words }[state.sort];
    if (key) {
      const dir = state.sort.endsWith("desc") ? -1 : 1;
      out.sort((a, b) => {
        const x = key[a], y = key[b];
        if (x === y) return a - b;
        if (x === null) return 1;
        if (y === null) return -1;
        return dir * (x - y);
      });
    }
    matches = out;
    api.timing.match = performance.now() - t0;
    ui.searchNote.textContent = terms.length && !texts ? "Text index still loading: matching ids only for now." : "";
  }
  const lowerIds = IX.ids.map((s) => String(s).toLowerCase());

  function refresh() {
    computeMatches();
    const pages = Math.max(1, Math.ceil(matches.length / state.pageSize));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    renderPage();
  }
  function pagerInto(box) {
    clear(box);
    const pages = Math.max(1, Math.ceil(matches.length / state.pageSize));
    const prev = el("button", "prev", "‹ Prev"); prev.type = "button"; prev.disabled = state.page <= 0;
    const next = el("button", "next", "Next ›"); next.type = "button"; next.disabled = state.page >= pages - 1;
    const inp = el("input"); inp.type = "number"; inp.min = "1"; inp.max = String(pages); inp.value = String(state.page + 1);
    inp.className = "pageinput";
    prev.addEventListener("click", () => goPage(state.page - 1));
    next.addEventListener("click", () => goPage(state.page + 1));
    inp.addEventListener("change", () => { const v = Number(inp.value); if (isFinite(v)) goPage(Math.round(v) - 1); });
    add(box, prev, "page", inp, "of " + fmtInt(pages), next);
  }
  function goPage(p) {
    const pages = Math.max(1, Math.ceil(matches.length / state.pageSize));
    state.page = Math.max(0, Math.min(pages - 1, p));
    renderPage();
    ui.bar.scrollIntoView({ block: "start" });
  }

  let renderToken = 0;
  function renderPage() {
    const token = ++renderToken;
    const t0 = performance.now();
    let seqs;
    if (state.focus >= 0) {
      seqs = [state.focus];
      ui.focusBar.classList.remove("hidden");
      clear(ui.focusBar);
      const back = el("button", null, "Back to the list"); back.type = "button";
      back.addEventListener("click", () => { history.replaceState(null, "", location.pathname + location.search); state.focus = -1; renderPage(); });
      add(ui.focusBar, el("span", null, "Showing one image: " + IX.ids[state.focus]), back);
      ui.count.textContent = "";
      clear(ui.pager); clear(ui.pager2);
    } else {
      ui.focusBar.classList.add("hidden");
      const start = state.page * state.pageSize;
      seqs = matches.slice(start, start + state.pageSize);
      ui.count.textContent = matches.length
        ? "Showing " + fmtInt(start + 1) + "–" + fmtInt(start + seqs.length) + " of " + fmtInt(matches.length) + " matching" + (matches.length !== N ? " (" + fmtInt(N) + " images in the run)" : "")
        : "No image matches (" + fmtInt(N) + " in the run).";
      pagerInto(ui.pager); pagerInto(ui.pager2);
    }
    if (FOLDER && seqs.length) {
      const missing = seqs.some((i) => !chunks.has(Math.floor(i / D.chunk_size)));
      if (missing) { clear(ui.cards); ui.cards.appendChild(el("div", "loading", "Loading records…")); }
    }
    return records(seqs).then((recs) => {
      if (token !== renderToken) return;
      api.timing.load = performance.now() - t0;
      const frag = document.createDocumentFragment();
      recs.forEach((r) => frag.appendChild(card(r)));
      clear(ui.cards);
      ui.cards.appendChild(frag);
      if (!api.ready.cards) { api.ready.cards = true; api.marks.firstCards = performance.now(); document.body.dataset.cards = "1"; }
      api.marks.lastRender = performance.now();
      api.timing.render = api.marks.lastRender - t0;
      api.renders = (api.renders || 0) + 1;
      api.rendered = { q: state.q, page: state.page, sort: state.sort, focus: state.focus, n: matches.length };
      if (state.focus >= 0) highlightFocus();
    }, (e) => {
      if (token !== renderToken) return;
      clear(ui.cards);
      ui.cards.appendChild(el("div", "error", "Could not load the records of this page (" + e.message + "). The folder " + D.files + " must sit next to the page."));
      api.errors.push(String(e.message));
    });
  }
  const rerenderCards = debounce(() => renderPage(), 120);

  // ------------------------------------------------------------------ one card
  function flipOf(seq, kind, key, stored) {
    // would this sentence's decision change at the current tau? null when unknown/not applicable
    if (!scores || tau.mode < 0 || recMode[seq] !== tau.mode || tau.value === null) return null;
    let s;
    if (kind === "c") s = scores.cap.s[scores.cap.off[seq] + key];
    else s = scores.ans.s[scores.ans.off[seq] + key];
    const now = s > tau.value;
    return now === stored ? null : now;
  }
  function sentenceNode(text, s, idBase, k, seq, flatIndex, kind) {
    const cls = s.s === null ? "unscored" : (s.k ? "kept" : "dropped");
    const span = el("span", "sent " + cls);
    span.id = idBase + k;
    span.appendChild(txt(text));
    const fp = IX.fp[seq] >= 0 ? FPS[IX.fp[seq]] : null;
    const runTau = fp ? fp.tau : null;
    const badge = el("span", "score " + cls, (s.k ? "✓ " : "✗ ") + (s.s === null ? "no content word" : fmtScore(s.s, runTau)));
    badge.title = s.s === null ? "no content token to score: not kept"
      : (s.k ? "kept: score " : "dropped: score ") + fmtNum(s.s, 6) + (s.k ? " > τ " : " ≤ τ ") + fmtNum(runTau);
    span.appendChild(badge);
    const f = flipOf(seq, kind, flatIndex, !!s.k);
    if (f !== null) {
      span.classList.add("flip");
      span.appendChild(el("span", "score flipnote", f ? "→ kept at τ " + fmtNum(tau.value) : "→ dropped at τ " + fmtNum(tau.value)));
    }
    if (s.tok && s.tok.length) {
      span.classList.add("has-tok");
      span.tabIndex = 0;
      span.title = "click for token scores";
      span.setAttribute("role", "button");
    }
    return span;
  }
  function tokenBox(s, label) {
    const box = el("div", "tokbox");
    let maxAbs = 0, best = -1, bestV = -Infinity;
    s.tok.forEach((t, i) => {
      if (t[1] !== null) maxAbs = Math.max(maxAbs, Math.abs(t[1]));
      if (t[2] && t[1] !== null && t[1] > bestV) { bestV = t[1]; best = i; }
    });
    box.appendChild(el("div", "tt", label + ": token Δ (with image − without). Bold underlined = content tokens (they decide the score); outlined = the maximum content Δ = the sentence score. Green: more likely with the image."));
    const line = el("div", "toks");
    s.tok.forEach((t, i) => {
      const sp = el("span", "tok" + (t[2] ? " content" : "") + (i === best ? " max" : ""), t[0]);
      const v = t[1];
      if (v !== null && maxAbs > 0) {
        const a = Math.min(1, Math.abs(v) / maxAbs) * 0.75 + 0.05;
        sp.style.backgroundColor = v >= 0 ? "rgba(29,122,70," + a.toFixed(3) + ")" : "rgba(179,38,30," + a.toFixed(3) + ")";
        if (a > 0.5) sp.style.color = "#fff";
      }
      sp.title = "Δ = " + fmtNum(v, 6) + (t[2] ? " (content token)" : " (not a content word)");
      line.appendChild(sp);
    });
    box.appendChild(line);
    return box;
  }
  function markedText(text, sents, seg, idBase, seq, kind, flatStart, tokHost) {
    const box = el("div", "textblock");
    if (text === null || text === undefined) { box.appendChild(el("span", "muted", "(none)")); return box; }
    const nodes = [];
    if (seg !== 0) {
      let pos = 0;
      sents.forEach((s, k) => {
        if (s.a > pos) box.appendChild(txt(text.slice(pos, s.a)));
        const n = sentenceNode(text.slice(s.a, s.b), s, idBase, k, seq, flatStart + k, kind);
        nodes.push([n, s, k]);
        box.appendChild(n);
        pos = Math.max(pos, s.b);
      });
      if (pos < text.length) box.appendChild(txt(text.slice(pos)));
    } else {
      box.appendChild(el("div", "note", "Sentence offsets do not match the text; the rated sentences are listed one by one:"));
      sents.forEach((s, k) => {
        const n = sentenceNode(s.t || "", s, idBase, k, seq, flatStart + k, kind);
        nodes.push([n, s, k]);
        box.appendChild(n);
        box.appendChild(txt("\n"));
      });
    }
    nodes.forEach((x) => {
      const n = x[0], s = x[1], k = x[2];
      if (!(s.tok && s.tok.length)) return;
      let open = null;
      const toggle = () => {
        if (open) { open.remove(); open = null; return; }
        open = tokenBox(s, "Sentence " + (k + 1));
        tokHost.appendChild(open);
      };
      n.addEventListener("click", toggle);
      n.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
    });
    return box;
  }
  function lazyDetails(title, build) {
    // the contents are built when the details element is first opened (cards stay cheap to render).
    // The toggle event comes a task after the click that opened it, so data-built="1" says when the
    // contents exist (what tests and scripts wait for).
    const d = el("details");
    d.appendChild(el("summary", null, title));
    d.buildNow = () => { if (!d.built) { d.built = true; build(d); d.dataset.built = "1"; } };
    d.addEventListener("toggle", () => { if (d.open) d.buildNow(); });
    return d;
  }
  function kv(obj) {
    const dl = el("dl", "kv");
    Object.keys(obj).forEach((k) => {
      let v = obj[k];
      v = typeof v === "string" ? v : JSON.stringify(v);
      if (v && v.length > 600) v = v.slice(0, 600) + "…";
      add(dl, el("dt", null, k), el("dd", null, v));
    });
    return dl;
  }
  function card(r) {
    const seq = r.seq;
    const c = el("article", "card");
    c.id = "card-" + seq;
    c.dataset.seq = String(seq);
    const h = el("header");
    add(h, el("span", "seq", "#" + (seq + 1)), el("h3", "rid", r.id), el("span", "badge " + r.st, r.st));
    if (r.st === "failed" && r.ek) h.appendChild(el("span", "badge failed", r.ek));
    if (r.st === "filtered" && r.why) h.appendChild(el("span", "badge filtered", r.why));
    if (IX.ratio[seq] !== null) h.appendChild(el("span", "badge", "kept " + IX.nkept[seq] + "/" + IX.nsent[seq]));
    if (r.fb) h.appendChild(el("span", "badge filtered", "caption fallback"));
    if (r.corr) h.appendChild(el("span", "badge", "corrected +" + r.corr.add.length + " −" + r.corr.rm.length + (r.corr.rej.length ? " ✗" + r.corr.rej.length : "")));
    if (r.corr && r.corr.na) h.appendChild(el("span", "badge filtered", "correction rejected" + (r.corr.n > 1 ? " (" + r.corr.na + "/" + r.corr.n + " rounds)" : "")));
    if (r.ab) h.appendChild(el("span", "badge", "asked " + r.ab.asked + "/" + r.ab.planned + " (" + r.ab.stop + ")"));
    if (r.dom && r.dom.id) h.appendChild(el("span", "badge", r.dom.id + " (" + r.dom.src + (r.dom.conf ? " " + r.dom.conf + "/3" : "") + ")"));
    if (r.fh) h.appendChild(el("span", "badge filtered", "filter " + Array.from(new Set(r.fh.map((x) => x.c))).join(", ")));
    if (r.ocr && r.ocr.q.some((q) => !q.ok)) h.appendChild(el("span", "badge filtered", "unsupported quote"));
    if (scores && tau.flipRec[seq]) h.appendChild(el("span", "badge", "flips at τ " + fmtNum(tau.value)));
    c.appendChild(h);

    const body = el("div", "cardbody");
    const tc = el("div", "thumbcol");
    const src = thumbSrc(r.th);
    const href = safeHref(r.href);
    let pic;
    if (src) { pic = el("img", "thumb"); pic.alt = "thumbnail of " + r.id; pic.src = src; }
    else pic = el("div", "ph", "no preview");
    if (href) {
      const a = el("a"); a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer"; a.title = "open the image";
      a.appendChild(pic); tc.appendChild(a);
    } else tc.appendChild(pic);
    tc.appendChild(el("div", "srcline mono", r.src));
    body.appendChild(tc);

    const main = el("div", "main");
    if (r.st === "failed") {
      const e = el("div", "error");
      add(e, el("strong", null, "Failed" + (r.ek ? " (" + r.ek + ")" : "")), el("pre", null, r.err || "no error message"));
      main.appendChild(e);
    }
    if (r.st === "filtered") {
      main.appendChild(add(el("div", "filterbox"), el("strong", null, "Filtered: "), txt(r.why || "unspecified")));
    }
    if (r.judge) {
      add(main, el("h4", null, "Judge · " + (r.judge.kept ? "kept" : "rejected (" + r.judge.below.join(", ") + ")")));
      main.appendChild(table(["dimension", "score", "kept at", "reason"],
        r.judge.s.map((j) => [j.d, String(j.v), j.min === null || j.min === undefined ? "" : String(j.min), j.r]), [0, 1, 1, 0]));
    }
    if (r.final !== null && r.final !== undefined) {
      add(main, el("h4", null, "Final caption"));
      main.appendChild(el("div", "textblock final", r.final));
    }
    if (r.corr) {
      const c = r.corr;
      add(main, el("h4", null, "Corrected caption · " + c.add.length + " added, " + c.rm.length + " removed, " +
        c.rej.length + " rejected by rating" + (c.n > 1 ? " · " + c.n + " rounds" : "")));
      main.appendChild(el("div", "textblock final", c.c === null ? "(none)" : c.c));
      if (c.add.length || c.rm.length || c.rej.length) {
        const d = el("details");
        d.appendChild(el("summary", null, "Correction diff (final → corrected)"));
        [["Added", c.add], ["Removed", c.rm], ["Written but rejected by rating", c.rej]].forEach((part) => {
          if (!part[1].length) return;
          const ul = el("ul");
          part[1].forEach((x) => ul.appendChild(el("li", null, x)));
          add(d, el("h4", null, part[0]), ul);
        });
        main.appendChild(d);
      }
    }
    if (r.fh) {
      const ul = el("ul");
      r.fh.forEach((x) => ul.appendChild(el("li", null, x.st + ": " + x.c + " (" + x.a + ") " + x.d)));
      add(main, el("h4", null, "Degenerate-output filter · " + r.fh.length + " hit(s)"), ul);
    }
    if (r.ocr) {
      const d = el("details");
      d.appendChild(el("summary", null, "OCR evidence (" + r.ocr.eng + ") · " + r.ocr.q.length + " quote(s) checked"));
      d.appendChild(el("pre", "textblock", r.ocr.text || "(no text read)"));
      if (r.ocr.q.length) {
        const ul = el("ul");
        r.ocr.q.forEach((q) => ul.appendChild(el("li", null, "“" + q.q + "” " + (q.ok ? "found" : "NOT in the OCR text") +
          " (similarity " + fmtNum(q.sim, 2) + ")" + (q.drop ? ", sentence dropped" : ""))));
        d.appendChild(ul);
      }
      main.appendChild(d);
    }
    if (r.ab) {
      main.appendChild(el("div", "note", "Adaptive budget: " + r.ab.asked + " of " + r.ab.planned + " objects asked, stopped by " +
        r.ab.stop + "; novelty per wave " + r.ab.nov.map((v) => fmtNum(v, 2)).join(", ")));
    }
    if (r.first !== null && r.first !== undefined) {
      const nk = r.sent.filter((s) => s.k).length;
      add(main, el("h4", null, "First caption · " + nk + " of " + r.sent.length + " sentences kept"));
      const tokHost = el("div");
      main.appendChild(markedText(r.first, r.sent, r.seg, "r" + seq + "-c", seq, "c", 0, tokHost));
      main.appendChild(tokHost);
      if (r.sent.some((s) => s.tok && s.tok.length)) main.appendChild(el("div", "legend", "Click a sentence to see its token scores."));
      if (r.fb) main.appendChild(el("div", "note", "No sentence passed rating: the whole first caption was used as context."));
    }
    if (r.q && r.q.length) {
      const nk = r.q.filter((q) => q.k).length;
      const d = lazyDetails("Questions: " + r.q.length + " (" + nk + " kept, " + (r.q.length - nk) + " dropped)", (d) => {
      const ul = el("ul", "qlist");
      let flat = 0;
      r.q.forEach((q, qi) => {
        const li = el("li", q.k ? "kept" : "dropped");
        const hd = el("div", "qhead");
        add(hd, el("span", "badge", q.kd), el("span", "qi", q.i), el("span", "badge " + (q.k ? "ok" : "failed"), q.k ? "kept" : "dropped"));
        li.appendChild(hd);
        if (q.a !== null && q.a !== undefined) {
          const tokHost = el("div");
          const m = markedText(q.a, q.as, q.seg, "r" + seq + "-a" + qi + ".", seq, "a", flat, tokHost);
          m.classList.add("qa");
          add(li, m, tokHost);
          if (!q.k) li.appendChild(el("div", "note", q.as.length ? "No sentence of the answer passed rating: the answer was dropped with its object." : "Dropped."));
        } else li.appendChild(el("div", "muted", "no answer"));
        flat += q.as.length;
        ul.appendChild(li);
      });
      d.appendChild(ul);
      });
      d.classList.add("qdetails");
      main.appendChild(d);
    }
    if (r.so !== null || r.sp !== null) {
      const d = el("details");
      d.appendChild(el("summary", null, "Summaries"));
      add(d, el("h4", null, "Objects"), el("div", "textblock", r.so === null ? "(none)" : r.so),
        el("h4", null, "Positions"), el("div", "textblock", r.sp === null ? "(none)" : r.sp));
      main.appendChild(d);
    }
    const stages = Object.keys(r.use || {});
    const tstages = Object.keys(r.tim || {});
    if (stages.length || tstages.length) {
      const d = el("details");
      const tot = stages.reduce((a, k) => a + r.use[k][1] + r.use[k][2], 0);
      d.appendChild(el("summary", null, "Usage and timings · " + fmtInt(tot) + " tokens" + (r.tim && r.tim.total !== undefined ? " · " + fmtNum(r.tim.total, 3) + " s" : "")));
      const all = stages.concat(tstages.filter((s) => stages.indexOf(s) < 0));
      d.appendChild(table(["stage", "calls", "prompt", "completion", "seconds"],
        all.map((k) => {
          const u = r.use[k];
          return [k, u ? fmtInt(u[0]) : "", u ? fmtInt(u[1]) : "", u ? fmtInt(u[2]) : "", r.tim[k] !== undefined ? fmtNum(r.tim[k], 4) : ""];
        }), [0, 1, 1, 1, 1]));
      main.appendChild(d);
    }
    const metaKeys = Object.keys(r.meta || {});
    if ((r.notes && r.notes.length) || metaKeys.length) {
      const d = el("details");
      d.appendChild(el("summary", null, "Notes and metadata"));
      if (r.notes.length) { const ul = el("ul"); r.notes.forEach((n) => ul.appendChild(el("li", null, n))); d.appendChild(ul); }
      if (metaKeys.length) d.appendChild(kv(r.meta));
      main.appendChild(d);
    }
    body.appendChild(main);
    c.appendChild(body);
    return c;
  }

  // ------------------------------------------------------------------ focus (#r=SEQ&s=c3 | a2.1)
  function readHash() {
    const m = /^#r=(\d+)(?:&s=([ca][0-9.]+))?$/.exec(location.hash);
    if (!m) { if (state.focus >= 0) { state.focus = -1; renderPage(); } return; }
    const r = Number(m[1]);
    if (!(r >= 0 && r < N)) return;
    state.focus = r;
    state.focusSent = m[2] || null;
    renderPage();
  }
  function highlightFocus() {
    const c = document.getElementById("card-" + state.focus);
    if (!c) return;
    c.classList.add("focus");
    let target = c;
    if (state.focusSent) {
      const kind = state.focusSent[0], key = state.focusSent.slice(1);
      if (kind === "a") {
        const d = c.querySelector("details.qdetails");
        if (d) { d.buildNow(); d.open = true; }
      }
      const node = document.getElementById("r" + state.focus + "-" + kind + key);
      if (node) { node.classList.add("hl"); target = node; }
    }
    target.scrollIntoView({ block: "center" });
  }

  // ------------------------------------------------------------------ unreadable lines
  function renderUnreadable() {
    add(secBad, el("h2", null, "Unreadable lines (" + fmtInt(OV.unreadable) + ")"));
    secBad.appendChild(el("div", "sub", "Lines of the run file that are not valid records; they are left out of everything above."));
    secBad.appendChild(table(["line", "problem", "beginning of the line"],
      OV.unreadable_lines.map((u) => [fmtInt(u.line), u.error, u.excerpt]), [1, 0, 0]));
    if (OV.unreadable > OV.unreadable_lines.length) secBad.appendChild(el("div", "sub", "(first " + OV.unreadable_lines.length + " listed)"));
    secBad.querySelectorAll("td:nth-child(3)").forEach((td) => td.classList.add("mono", "breakall"));
  }

  // ------------------------------------------------------------------ boot
  function useScores(s) {
    scores = {
      cap: { off: s.cap.off, s: Float64Array.from(s.cap.s, (v) => (v === null ? NaN : v)), k: Uint8Array.from(s.cap.k, (ch) => (ch === "1" ? 1 : 0)) },
      ans: { off: s.ans.off, s: Float64Array.from(s.ans.s, (v) => (v === null ? NaN : v)), k: Uint8Array.from(s.ans.k, (ch) => (ch === "1" ? 1 : 0)), q: s.ans.q },
    };
    api.ready.scores = true;
    api.marks.scores = performance.now();
    if (tauUI.slider) {
      tauUI.slider.disabled = tauUI.number.disabled = false;
      document.getElementById("tau-reset").disabled = false;
      tauUI.info.textContent = "";
      resetTau();
    }
  }
  function useSearch(s) {
    search = s;
    api.ready.search = true;
    api.marks.search = performance.now();
    if (state.q) refresh();
  }

  try {
    renderOverview();
    if (EVALS.length) renderEvaluations();
    renderTauPanel();
    renderControls();
    if (OV.unreadable) renderUnreadable();
    if (!FOLDER) {
      useScores(D.scores);
      useSearch(D.search);
    }
    computeMatches();
    api.marks.built = performance.now();
    window.addEventListener("hashchange", readHash);
    const first = location.hash ? (readHash(), Promise.resolve()) : renderPage();
    // the sentence scores and the text index load after the first page of cards is on screen
    if (FOLDER) (first || Promise.resolve()).then(() => {
      loadScript(D.files + "scores.js").then(() => { useScores(api._scores); api._scores = null; },
        (e) => { api.errors.push(e.message); if (tauUI.info) tauUI.info.textContent = "Could not load " + D.files + "scores.js."; });
      loadScript(D.files + "search.js").then(() => { useSearch(api._search); api._search = null; },
        (e) => { api.errors.push(e.message); ui.searchNote.textContent = "Could not load the text index: searching ids only."; });
    });
  } catch (e) {
    api.errors.push(String(e && e.stack || e));
    app.appendChild(el("pre", "error", "The report could not be displayed: " + (e && e.message)));
    throw e;
  }
})();
