// The ganserve page: lists the served models (GET /v1/models) and runs each one through the HTTP image API.
// Plain JavaScript, no build step, no library, nothing fetched from anywhere but this server.
//
// For tests and scripts: after every successful run `window.ganserveLast` holds the reply (status, headers, the
// body as base64, the parsed JSON for classify, the timing) and `window.ganserveRuns` counts finished runs
// (successful or not), so a caller can wait for the next one.
"use strict";

(() => {
  const TOKEN_KEY = "ganserve.token";
  const RPCS = ["Transform", "Classify", "Generate"];
  // query parameter names the endpoints read as options; a condition with one of these names goes as condition.NAME
  const OPTION_NAMES = {
    Transform: ["format", "quality", "tile_size", "tile_overlap", "ensemble", "timeout_ms"],
    Classify: ["top_k", "timeout_ms"],
    Generate: ["seed", "condition", "format", "quality", "ensemble", "timeout_ms"],
  };
  // a metric named PREFIX_<name> is the baseline of <name> (bicubic_psnr_y for psnr_y, chance_accuracy ...)
  const BASELINE_PREFIXES = ["bicubic", "bilinear", "nearest", "rainy", "input", "chance", "baseline", "identity",
    "noisy", "source", "random", "prior", "reference"];

  let memoryToken = "";  // only where sessionStorage is disabled
  const state = { models: [], selected: null, input: null, inputLabel: "", mask: null, maskLabel: "", busy: false };
  const urls = { input: null, mask: null, output: null };
  window.ganserveLast = null;
  window.ganserveRuns = 0;

  const $ = (id) => document.getElementById(id);

  // -- small helpers ---------------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtNum(x) {
    if (typeof x !== "number") return x === undefined || x === null ? "—" : String(x);
    if (!Number.isFinite(x)) return String(x);
    if (Number.isInteger(x)) return x.toLocaleString("en-US");
    if (Math.abs(x) >= 1) return x.toFixed(3);
    return x.toPrecision(3);
  }

  function fmtMs(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return "—";
    return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lasts until the page reloads */ memoryToken = value; }
  }

  function api(path, init) {
    const options = Object.assign({}, init || {});
    const headers = new Headers(options.headers || {});
    const t = token() || memoryToken;
    if (t) headers.set("Authorization", "Bearer " + t);
    options.headers = headers;
    options.cache = "no-store";
    return fetch(path, options);
  }

  async function errorOf(response) {
    const text = await response.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "string") return body.error;
    } catch (e) { /* not JSON */ }
    return text.trim() || response.statusText || "HTTP " + response.status;
  }

  function showError(message, status) {
    const box = $("error");
    box.textContent = "";
    if (status) box.append(el("strong", { text: "HTTP " + status + " " }));
    box.append(el("span", { id: "error-message", text: message }));
    box.hidden = false;
  }

  function clearError() {
    const box = $("error");
    box.textContent = "";
    box.hidden = true;
  }

  function toBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function serverTiming(header) {
    // "decode;dur=1.2, infer;dur=3.4, ..." -> {decode: 1.2, infer: 3.4, ...}
    const out = {};
    for (const part of (header || "").split(",")) {
      const [name, ...params] = part.trim().split(";");
      if (!name) continue;
      for (const param of params) {
        const [key, value] = param.trim().split("=");
        if (key === "dur") out[name.trim()] = parseFloat(value);
      }
    }
    return out;
  }

  function hashModel() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    return params.get("model");
  }

  const inputsOf = (m, role) => (m.inputs || []).filter((t) => (t.role || "") === role);

  // -- token ------------------------------------------------------------------------------------------------------
  function askToken(message) {
    const form = $("token-form");
    form.hidden = false;
    $("token-message").textContent = message || "";
    $("models").replaceChildren(el("li", { class: "muted", text: "waiting for a token…" }));
    $("model-count").textContent = "";
    $("token").focus();
  }

  function setupToken() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) { $("token-message").textContent = "enter the token first"; return; }
      setToken(value);
      $("token").value = "";
      loadModels();
    });
    $("token-forget").addEventListener("click", () => {
      setToken("");
      memoryToken = "";
      $("token-forget").hidden = true;
      loadModels();
    });
  }

  // -- the model list ---------------------------------------------------------------------------------------------
  async function loadModels() {
    let response;
    try {
      response = await api("/v1/models");
    } catch (e) {
      showError("the server does not answer: " + e.message);
      return;
    }
    if (response.status === 401) {
      const had = Boolean(token() || memoryToken);
      const message = await errorOf(response);
      askToken(had ? "The token was refused: " + message : message);
      return;
    }
    if (!response.ok) {
      showError(await errorOf(response), response.status);
      return;
    }
    $("token-form").hidden = true;
    $("token-forget").hidden = !(token() || memoryToken);
    clearError();
    const body = await response.json();
    state.models = (body.models || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    renderList();
    selectFromHash();
  }

  function stateClass(m) {
    return (m.state || "UNKNOWN") === "READY" ? "ready" : "unavailable";
  }

  function renderList() {
    const list = $("models");
    list.replaceChildren();
    $("model-count").textContent = "(" + state.models.length + ")";
    if (!state.models.length) list.append(el("li", { class: "muted", text: "no models served" }));
    for (const m of state.models) {
      const how = m.rpc || (m.state === "READY" ? "raw tensors" : "");
      list.append(el("li", { dataset: { model: m.name } },
        el("a", { href: "#model=" + encodeURIComponent(m.name), class: "model-link" },
          el("span", { class: "model-top" },
            el("span", { class: "model-name", text: m.name }),
            el("span", { class: "badge state " + stateClass(m), text: m.state || "UNKNOWN" })),
          el("span", { class: "model-sub muted", text: [m.task || "", how].filter(Boolean).join(" · ") }))));
    }
    markSelected();
  }

  function markSelected() {
    for (const li of $("models").querySelectorAll("li[data-model]")) {
      li.classList.toggle("selected", Boolean(state.selected) && li.dataset.model === state.selected.name);
    }
  }

  function selectFromHash() {
    const name = hashModel();
    const m = state.models.find((x) => x.name === name) || null;
    if (name && !m && state.models.length) showError("no model named " + JSON.stringify(name) + " is served");
    select(m);
  }

  function select(m) {
    if (m === state.selected && m !== null) return;
    state.selected = m;
    state.input = state.mask = null;
    state.inputLabel = state.maskLabel = "";
    for (const key of Object.keys(urls)) { if (urls[key]) URL.revokeObjectURL(urls[key]); urls[key] = null; }
    markSelected();
    const detail = $("model-detail");
    if (!m) {
      detail.hidden = true;
      detail.replaceChildren();
      $("placeholder").hidden = false;
      return;
    }
    clearError();
    $("placeholder").hidden = true;
    detail.replaceChildren(...renderDetail(m));
    detail.hidden = false;
    document.title = m.name + " · ganserve";
  }

  // -- one model's facts ------------------------------------------------------------------------------------------
  function renderDetail(m) {
    const parts = [];
    parts.push(el("div", { class: "detail-head" },
      el("h2", { id: "model-name", text: m.name }),
      m.version ? el("span", { class: "badge", text: "v" + m.version }) : null,
      el("span", { id: "model-state", class: "badge state " + stateClass(m), text: m.state || "UNKNOWN" })));
    if ((m.state || "") !== "READY") {
      parts.push(el("p", { id: "model-reason", class: "reason", text: m.reason || "not available" }));
    }
    const card = m.card || {};
    const facts = [
      ["task", m.task], ["architecture", m.architecture],
      ["parameters", card.parameters ? fmtNum(card.parameters) : null],
      ["scale", m.scale && m.scale !== 1 ? "×" + m.scale : null],
      ["served with", m.provider ? m.provider.replace(/ExecutionProvider$/, "") + " / " + (m.precision || "?") : null],
      ["API", m.rpc ? m.rpc + " (" + endpointOf(m) + ")" : (m.state === "READY" ? "raw tensors only (KServe v2 ModelInfer)" : null)],
      ["labels", (m.labels || []).length ? m.labels.join(", ") : null],
      ["inputs", tensorList(m.inputs)], ["outputs", tensorList(m.outputs)],
    ];
    const training = card.training || {};
    const trained = ["data", "steps", "minutes", "budget"].filter((k) => training[k] !== undefined && training[k] !== "")
      .map((k) => k + " " + (typeof training[k] === "object" ? JSON.stringify(training[k]) : fmtNum(training[k])));
    if (trained.length) facts.push(["training", trained.join(" · ")]);
    const dl = el("dl", { id: "facts", class: "facts" });
    for (const [name, value] of facts) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(el("dt", { text: name }), el("dd", {}, value));
    }
    parts.push(dl);

    if ((m.state || "") === "READY" && RPCS.includes(m.rpc)) parts.push(renderForm(m), renderResult(m));
    else if ((m.state || "") === "READY") {
      parts.push(el("p", { class: "muted", id: "no-form",
        text: "This model has no image input or output the image API can read: call it with raw tensors over " +
              "KServe v2 (gRPC ModelInfer or POST /v2/models/" + m.name + "/infer)." }));
    }

    const metrics = renderMetrics(card.metrics || {});
    if (metrics) parts.push(el("section", { class: "block" }, el("h3", { text: "Held-out metrics" }), metrics));
    if ((card.notes || []).length) {
      parts.push(el("section", { class: "block" }, el("h3", { text: "Notes" }),
        el("ul", { class: "notes" }, card.notes.map((n) => el("li", { text: n })))));
    }
    if (m.choice) parts.push(renderChoice(m.choice));
    return parts;
  }

  function endpointOf(m) {
    const path = "/v1/models/" + m.name + "/" + m.rpc.toLowerCase();
    return (m.rpc === "Generate" ? "GET " : "POST ") + path;
  }

  function tensorList(tensors) {
    if (!(tensors || []).length) return null;
    return el("span", { class: "tensors" }, tensors.map((t) => el("code", {
      text: t.name + " " + (t.role || "") + " " + (t.datatype || "") + "[" + (t.shape || []).join(",") + "]",
    })));
  }

  function renderMetrics(metrics) {
    const keys = Object.keys(metrics);
    if (!keys.length) return null;
    const quality = typeof metrics.quality_key === "string" ? metrics.quality_key : "";
    const baselineOf = {};
    const used = new Set(["quality_key"]);
    for (const key of keys) {
      for (const prefix of BASELINE_PREFIXES) {
        const other = prefix + "_" + key;
        if (other in metrics && typeof metrics[other] === "number" && typeof metrics[key] === "number") {
          baselineOf[key] = other;
          used.add(other);
          break;
        }
      }
    }
    const table = el("table", { id: "metrics", class: "grid" },
      el("thead", {}, el("tr", {}, el("th", { text: "metric" }), el("th", { class: "num", text: "value" }),
        el("th", { class: "num", text: "baseline" }), el("th", { text: "baseline is" }))));
    const body = el("tbody");
    const nested = [];
    for (const key of keys) {
      if (used.has(key)) continue;
      const value = metrics[key];
      if (value && typeof value === "object") { nested.push(key); continue; }
      const base = baselineOf[key];
      body.append(el("tr", { class: key === quality ? "quality" : null, dataset: { metric: key } },
        el("td", {}, key, key === quality ? el("span", { class: "badge small", title: "the metric the server's precision check uses", text: "quality" }) : null),
        el("td", { class: "num", text: fmtNum(value) }),
        el("td", { class: "num", text: base ? fmtNum(metrics[base]) : "" }),
        el("td", { class: "muted", text: base || "" })));
    }
    table.append(body);
    const wrap = el("div", { class: "metrics" }, table);
    for (const key of nested) wrap.append(renderNested(key, metrics[key]));
    return wrap;
  }

  function renderNested(key, value) {
    // {fp32: {psnr: ..}, int8: {psnr: ..}} as one table, a column per entry; anything else as JSON
    const columns = Object.keys(value);
    const rows = [];
    const flat = columns.every((c) => value[c] && typeof value[c] === "object" && !Array.isArray(value[c]));
    if (!flat) {
      return el("details", { class: "nested" }, el("summary", { text: key }), el("pre", { text: JSON.stringify(value, null, 1) }));
    }
    for (const c of columns) for (const r of Object.keys(value[c])) if (!rows.includes(r)) rows.push(r);
    return el("details", { class: "nested", dataset: { metric: key } }, el("summary", { text: key.replace(/_/g, " ") }),
      el("table", { class: "grid compact" },
        el("thead", {}, el("tr", {}, el("th", { text: "metric" }), columns.map((c) => el("th", { class: "num", text: c })))),
        el("tbody", {}, rows.map((r) => el("tr", {}, el("td", { text: r }),
          columns.map((c) => el("td", { class: "num", text: fmtNum(value[c][r]) })))))));
  }

  function renderChoice(choice) {
    const rows = (choice.candidates || []).map((c) => el("tr", { class: "status-" + (c.status || "") },
      el("td", { text: (c.provider || "").replace(/ExecutionProvider$/, "") }),
      el("td", { text: c.precision || "" }),
      el("td", {}, el("span", { class: "badge small status " + (c.status || ""), text: c.status || "" })),
      el("td", { class: "num", text: typeof c.p50_ms === "number" ? fmtMs(c.p50_ms) : "—" }),
      el("td", { class: "muted why", text: c.reason || c.quality || "" })));
    return el("section", { class: "block" },
      el("h3", { text: "Provider and precision" }),
      el("p", { id: "choice-summary", text: choice.summary || "" }),
      el("details", { class: "candidates", open: rows.length <= 12 },
        el("summary", { text: rows.length + " candidates" }),
        el("table", { id: "candidates", class: "grid compact" },
          el("thead", {}, el("tr", {}, ["provider", "precision", "status"].map((h) => el("th", { text: h })),
            el("th", { class: "num", text: "p50 ms" }), el("th", { text: "quality / reason" }))),
          el("tbody", {}, rows))));
  }

  // -- the form ---------------------------------------------------------------------------------------------------
  function field(label, control, extra) {
    return el("div", { class: "field" }, el("label", { for: control.id, text: label }), control, extra || null);
  }

  // self-ensemble: only a tile-safe model's output for a flipped or rotated image is that image's output turned, so
  // only those get the control; the card's measured gain and cost, where the export measured them, as its tooltip
  function ensembleField(m) {
    const e = (m.card || {}).ensemble || {};
    const measured = e.applies && typeof e.gain === "number"
      ? `measured at export: ${e.metric} ${e.gain >= 0 ? "+" : ""}${e.gain.toFixed(3)}, ${e.cost_ratio}× the time`
      : "averages the 8 flips and rotations of the image";
    const box = el("input", { id: "ensemble", type: "checkbox", title: measured });
    return field("self-ensemble ×8", box, el("span", { class: "muted small", text: "8 passes, slower",
      title: measured }));
  }

  function renderForm(m) {
    const form = el("form", { id: "run-form", class: "run-form", onsubmit: (e) => { e.preventDefault(); run(); } });
    const rows = el("div", { class: "fields" });
    if (m.rpc === "Generate") {
      const seed = el("input", { id: "seed", type: "number", value: "0", step: "1", min: "0" });
      rows.append(field("seed", seed, el("button", { id: "seed-random", type: "button", class: "secondary",
        text: "random", onclick: () => { seed.value = String(Math.floor(Math.random() * 2 ** 31)); } })));
    } else {
      const file = el("input", { id: "image-file", type: "file", accept: "image/*", onchange: (e) => {
        const f = e.target.files[0];
        if (f) setInput(f, f.name);
      } });
      rows.append(field("image", file, m.example ? el("button", { id: "example", type: "button", class: "secondary",
        text: "use the built-in example", onclick: () => useExample(m) }) : null));
      if (inputsOf(m, "mask").length) {
        rows.append(field("mask", el("input", { id: "mask-file", type: "file", accept: "image/*", onchange: (e) => {
          const f = e.target.files[0];
          if (f) setMask(f, f.name);
        } })));
      }
    }
    if (m.rpc !== "Classify") {
      for (const c of m.conditions || []) {
        const select = el("select", { id: "cond-" + c.name, class: "condition", dataset: { condition: c.name } },
          (c.choices || []).map((choice) => el("option", { value: choice, text: choice,
            selected: choice === (c.default || (c.choices || [])[0]) })));
        rows.append(field(c.name + (c.default ? "" : " *"), select,
          c.default ? el("span", { class: "muted small", text: "default " + c.default }) : null));
      }
      const format = el("select", { id: "format" }, el("option", { value: "png", text: "PNG", selected: true }),
        el("option", { value: "jpeg", text: "JPEG" }));
      const quality = el("input", { id: "quality", type: "number", min: "1", max: "100", placeholder: "90", class: "short" });
      const qualityField = field("JPEG quality", quality);
      qualityField.hidden = true;
      format.addEventListener("change", () => { qualityField.hidden = format.value !== "jpeg"; });
      rows.append(field("output", format), qualityField);
      if (m.rpc === "Transform") {
        rows.append(field("tile size", el("input", { id: "tile-size", type: "number", min: "0", step: "1",
          placeholder: "card default", class: "short", title: "0 runs the whole image at once" })),
          field("tile overlap", el("input", { id: "tile-overlap", type: "number", min: "0", step: "1",
            placeholder: "default", class: "short" })));
        if (m.tile_safe) rows.append(ensembleField(m));
      }
    } else {
      rows.append(field("top k", el("input", { id: "top-k", type: "number", min: "1", step: "1", value: "5", class: "short" })));
    }
    form.append(rows, el("div", { class: "actions" },
      el("button", { id: "run", type: "submit", class: "primary", text: "Run" }),
      el("span", { id: "run-status", class: "muted" })));
    return form;
  }

  function renderResult(m) {
    const panels = [];
    if (m.rpc !== "Generate") {
      panels.push(el("figure", { id: "input-panel", class: "panel" },
        el("div", { class: "frame" }, el("img", { id: "input-preview", alt: "input", hidden: true }),
          el("span", { id: "input-empty", class: "muted", text: "no input yet" })),
        el("figcaption", {}, "input ", el("span", { id: "input-size", class: "muted" }))));
      if (inputsOf(m, "mask").length) {
        panels.push(el("figure", { id: "mask-panel", class: "panel" },
          el("div", { class: "frame" }, el("img", { id: "mask-preview", alt: "mask", hidden: true }),
            el("span", { id: "mask-empty", class: "muted", text: "no mask yet" })),
          el("figcaption", {}, "mask ", el("span", { id: "mask-size", class: "muted" }))));
      }
    }
    if (m.rpc === "Classify") {
      panels.push(el("div", { id: "scores-panel", class: "panel" },
        el("table", { id: "scores", class: "grid", hidden: true },
          el("thead", {}, el("tr", {}, el("th", { text: "label" }), el("th", { class: "num", text: "index" }),
            el("th", { class: "num", text: "probability" }), el("th", {}))),
          el("tbody")),
        el("span", { id: "scores-empty", class: "muted", text: "scores appear here" })));
    } else {
      panels.push(el("figure", { id: "output-panel", class: "panel" },
        el("div", { class: "frame" }, el("img", { id: "output", alt: "output", hidden: true }),
          el("span", { id: "output-empty", class: "muted", text: "no output yet" })),
        el("figcaption", {}, "output ", el("span", { id: "output-size", class: "muted" }))));
    }
    return el("section", { id: "result", class: "result" },
      el("div", { class: "panels" }, panels),
      el("div", { id: "timing", class: "timing muted", hidden: true }));
  }

  async function showPreview(which, blob, label) {
    const img = $(which + "-preview");
    if (!img) return;
    if (urls[which]) URL.revokeObjectURL(urls[which]);
    urls[which] = URL.createObjectURL(blob);
    img.src = urls[which];
    const size = $(which + "-size");
    try {
      await img.decode();
      img.hidden = false;
      $(which + "-empty").hidden = true;
      size.textContent = label + " · " + img.naturalWidth + "×" + img.naturalHeight;
    } catch (e) {
      img.hidden = true;
      $(which + "-empty").hidden = false;
      $(which + "-empty").textContent = "the browser cannot show this file";
      size.textContent = label;
    }
  }

  function setInput(blob, label) {
    state.input = blob;
    state.inputLabel = label;
    showPreview("input", blob, label);
  }

  function setMask(blob, label) {
    state.mask = blob;
    state.maskLabel = label;
    showPreview("mask", blob, label);
  }

  async function useExample(m) {
    clearError();
    const path = "/v1/models/" + encodeURIComponent(m.name) + "/example";
    try {
      const response = await api(path);
      if (!response.ok) { showError(await errorOf(response), response.status); return; }
      if ($("image-file")) $("image-file").value = "";
      setInput(await response.blob(), "built-in example");
      if (inputsOf(m, "mask").length) {
        const maskResponse = await api(path + "?input=mask");
        if (maskResponse.ok) {
          if ($("mask-file")) $("mask-file").value = "";
          setMask(await maskResponse.blob(), "built-in example");
        }
      }
    } catch (e) {
      showError("the example could not be fetched: " + e.message);
    }
  }

  // -- a run ------------------------------------------------------------------------------------------------------
  function paramsOf(m) {
    const params = new URLSearchParams();
    const value = (id) => ($(id) ? $(id).value.trim() : "");
    if (m.rpc === "Classify") {
      if (value("top-k")) params.set("top_k", value("top-k"));
      return params;
    }
    if (m.rpc === "Generate") params.set("seed", value("seed") || "0");
    params.set("format", value("format") || "png");
    if (value("format") === "jpeg" && value("quality")) params.set("quality", value("quality"));
    if (value("tile-size")) params.set("tile_size", value("tile-size"));
    if (value("tile-overlap")) params.set("tile_overlap", value("tile-overlap"));
    if ($("ensemble") && $("ensemble").checked) params.set("ensemble", "8");
    for (const select of document.querySelectorAll("select.condition")) {
      const name = select.dataset.condition;
      params.set(OPTION_NAMES[m.rpc].includes(name) ? "condition." + name : name, select.value);
    }
    return params;
  }

  function setBusy(busy) {
    state.busy = busy;
    const button = $("run");
    if (button) { button.disabled = busy; button.textContent = busy ? "Running…" : "Run"; }
    if ($("run-status")) $("run-status").textContent = busy ? "waiting for the server…" : "";
    document.body.dataset.busy = busy ? "1" : "";
  }

  async function run() {
    const m = state.selected;
    if (!m || state.busy) return;
    clearError();
    const params = paramsOf(m);
    const path = "/v1/models/" + encodeURIComponent(m.name) + "/" + m.rpc.toLowerCase() + "?" + params.toString();
    const init = { method: m.rpc === "Generate" ? "GET" : "POST" };
    if (m.rpc !== "Generate") {
      if (!state.input) { showError("choose an image first" + (m.example ? " (or use the built-in example)" : "")); window.ganserveRuns++; return; }
      if (state.mask || inputsOf(m, "mask").length) {
        const form = new FormData();
        form.append("image", state.input, state.inputLabel || "image");
        if (state.mask) form.append("mask", state.mask, state.maskLabel || "mask");
        init.body = form;
      } else {
        init.body = state.input;
        init.headers = { "Content-Type": state.input.type || "application/octet-stream" };
      }
    }
    setBusy(true);
    try {
      const started = performance.now();
      const response = await api(path, init);
      if (!response.ok) {
        const message = await errorOf(response);
        showError(message, response.status);
        if (response.status === 401) askToken(message);
        return;
      }
      const buffer = await response.arrayBuffer();
      const roundTrip = performance.now() - started;
      const headers = {};
      response.headers.forEach((value, key) => { headers[key] = value; });
      const last = { ok: true, status: response.status, model: m.name, rpc: m.rpc, url: path, headers,
        contentType: headers["content-type"] || "", base64: toBase64(buffer), roundTripMs: roundTrip };
      if (m.rpc === "Classify") {
        last.json = JSON.parse(new TextDecoder().decode(buffer));
        const t = last.json.timing || {};
        last.timing = { decode: t.decode_ms, infer: t.infer_ms, encode: t.encode_ms, total: t.total_ms };
        showScores(last.json);
      } else {
        last.timing = serverTiming(headers["server-timing"]);
        last.runs = parseInt(headers["x-ganserve-runs"] || "", 10);
        last.width = parseInt(headers["x-ganserve-width"] || "", 10);
        last.height = parseInt(headers["x-ganserve-height"] || "", 10);
        await showOutput(new Blob([buffer], { type: last.contentType || "image/png" }), last);
      }
      showTiming(last);
      window.ganserveLast = last;
    } catch (e) {
      showError("the request failed: " + e.message);
    } finally {
      setBusy(false);
      window.ganserveRuns++;
    }
  }

  async function showOutput(blob, last) {
    const img = $("output");
    if (urls.output) URL.revokeObjectURL(urls.output);
    urls.output = URL.createObjectURL(blob);
    img.src = urls.output;
    try { await img.decode(); } catch (e) { /* shown as broken; the size line says what the server sent */ }
    img.hidden = false;
    $("output-empty").hidden = true;
    const kind = (last.contentType.split("/")[1] || "").toUpperCase();
    $("output-size").textContent = (img.naturalWidth || last.width) + "×" + (img.naturalHeight || last.height) +
      " " + kind + " · " + (blob.size / 1024).toFixed(1) + " KiB";
  }

  function showScores(reply) {
    const table = $("scores");
    const body = table.querySelector("tbody");
    body.replaceChildren();
    for (const s of reply.scores || []) {
      const p = s.probability || 0;
      body.append(el("tr", { dataset: { label: s.label || "" } },
        el("td", { class: "label", text: s.label || "" }), el("td", { class: "num", text: String(s.index || 0) }),
        el("td", { class: "num", text: (100 * p).toFixed(2) + " %" }),
        el("td", { class: "bar-cell" }, el("span", { class: "bar", style: "width:" + Math.max(1, Math.round(100 * p)) + "%" }))));
    }
    table.hidden = false;
    $("scores-empty").hidden = true;
  }

  function showTiming(last) {
    const box = $("timing");
    const t = last.timing || {};
    const item = (name, value, id) => el("span", { class: "t" }, name + " ", el("b", { id, text: fmtMs(value) }), " ms");
    box.replaceChildren(
      item("decode", t.decode, "timing-decode"), item("infer", t.infer, "timing-infer"),
      item("encode", t.encode, "timing-encode"), item("total", t.total, "timing-total"),
      Number.isFinite(last.runs) ? el("span", { class: "t" }, "network runs ", el("b", { id: "timing-runs", text: String(last.runs) })) : null,
      el("span", { class: "t" }, "round trip ", el("b", { id: "timing-roundtrip", text: fmtMs(last.roundTripMs) }), " ms"),
      last.headers["x-ganserve-model-version"] ? el("span", { class: "t" }, "version ", el("b", { text: last.headers["x-ganserve-model-version"] })) : null);
    box.hidden = false;
  }

  // -- start ------------------------------------------------------------------------------------------------------
  function start() {
    setupToken();
    $("server-note").textContent = location.host;
    window.addEventListener("hashchange", selectFromHash);
    loadModels();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
