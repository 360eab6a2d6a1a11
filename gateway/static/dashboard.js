// mailgate dashboard: reads /api/*, draws the page, asks before every change.
"use strict";
(function () {
  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const writable = body.dataset.writable === "1";
  const $ = (sel) => document.querySelector(sel);
  let paused = false;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }
  function fill(target, rows) { const t = $(target); t.replaceChildren(...rows); }
  function num(v) { return el("td", { class: "n" }, v); }
  function say(text, bad) { const m = $("#message"); m.textContent = text; m.className = bad ? "error" : "muted"; }

  async function getJSON(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  function drawQueues(q) {
    const rows = Object.entries(q.queues).map(([name, d]) => {
      const idle = !(d.waiting || d.active || d.delayed || d.failed);
      const tr = el("tr", { "data-queue": name, class: idle ? "idle" : "" },
        el("td", {}, name, d.consumed ? "" : el("span", { class: "muted" }, " (no handler)")));
      for (const col of ["waiting", "active", "delayed", "failed"]) {
        const td = num(d[col]); td.setAttribute("data-col", col); tr.append(td);
      }
      return tr;
    });
    fill("#queues tbody", rows);
    for (const k of ["delayed", "dead", "processing"]) $("#total-" + k).textContent = q[k];
  }

  function drawStatus(s) {
    const health = $("#health");
    health.textContent = s.healthy ? "healthy" : "unhealthy";
    health.className = "badge " + (s.healthy ? "ok" : "bad");
    fill("#problems", [...s.problems.map((p) => el("li", { class: "error" }, p)),
      ...s.warnings.map((w) => el("li", {}, w))]);
    if (!s.queues) return;
    drawQueues(s.queues);
    fill("#instances tbody", s.instances.map((i) => el("tr", {},
      el("td", {}, i.instance), el("td", {}, i.version), num(i.report_age_s),
      el("td", {}, Object.entries(i.components).map(([n, st]) => n + " " + st).join(", ")))));
    fill("#workers tbody", s.workers.length ? s.workers.map((w) => el("tr", { "data-worker": w.worker_id },
      el("td", {}, w.worker_id), el("td", {}, w.status), num(w.heartbeat_age_s), num(w.in_flight), num(w.jobs_processed)))
      : [el("tr", {}, el("td", { colSpan: 5, class: "error" }, "no live worker"))]);
    const st = s.watchers.by_state;
    fill("#watchers tbody", Object.keys(st).length ? Object.entries(st).map(([k, v]) => el("tr", { "data-state": k }, el("td", {}, k), num(v)))
      : [el("tr", {}, el("td", { colSpan: 2, class: "muted" }, "no IMAP watchers"))]);
    fill("#backoff", s.watchers.backoff.map((b) => el("li", {}, (b.address || b.account) + " " + b.folder + ": ",
      el("span", { class: "error" }, b.last_error || "?"), " (" + b.failures + " failures)")));
    const l = s.listener;
    fill("#listener", [el("li", {}, "sessions open: ", el("b", { "data-listener": "open" }, l.sessions_open)),
      el("li", {}, "last hour: " + (Object.entries(l.last_hour_sessions).map(([k, v]) => k + " " + v).join(", ") || "no sessions")),
      el("li", {}, "refused: " + (Object.entries(l.last_hour_refusals).map(([k, v]) => k + " " + v).join(", ") || "none"))]);
    const d = s.delivery;
    fill("#delivery", [el("li", {}, "pooled connections: " + d.pool_connections),
      el("li", {}, "last hour: " + (Object.entries(d.last_hour).map(([k, v]) => k + " " + v).join(", ") || "nothing sent"))]);
  }

  function drawThroughput(t) {
    const canvas = $("#chart"), ctx = canvas.getContext("2d");
    const w = canvas.width = canvas.clientWidth * devicePixelRatio, h = canvas.height = 160 * devicePixelRatio;
    const pts = t.per_minute, max = Math.max(1, ...pts.map((p) => p.completed + p.failed));
    ctx.clearRect(0, 0, w, h);
    const bw = w / Math.max(pts.length, 1);
    pts.forEach((p, i) => {
      const hc = (p.completed / max) * (h - 14), hf = (p.failed / max) * (h - 14);
      ctx.fillStyle = "#2f7d4a"; ctx.fillRect(i * bw + 1, h - hc, bw - 2, hc);
      ctx.fillStyle = "#c0392b"; ctx.fillRect(i * bw + 1, h - hc - hf, bw - 2, hf);
    });
    ctx.fillStyle = "#5f6b76"; ctx.font = 11 * devicePixelRatio + "px sans-serif";
    ctx.fillText("max " + max + "/min", 4, 12 * devicePixelRatio);
    const sum = (k) => pts.reduce((a, p) => a + p[k], 0);
    $("#throughput-total").textContent = sum("completed") + " completed, " + sum("failed") + " failed in the last hour";
  }

  function drawDead(d) {
    $("#dead-total").textContent = d.total;
    fill("#dlq tbody", d.letters.length ? d.letters.map((l) => {
      const actions = el("td", {});
      if (writable && l.id !== null) {
        if (l.retryable) actions.append(el("button", { "data-action": "retry", "data-id": l.id }, "Retry"), " ");
        actions.append(el("button", { "data-action": "delete", "data-id": l.id }, "Delete"));
      }
      return el("tr", { "data-job": l.id ?? "" }, el("td", {}, l.id ?? "(no id)"), el("td", {}, l.queue ?? ""),
        el("td", { class: "error" }, l.error ?? ""), el("td", {}, l.failed_at ?? ""), actions);
    }) : [el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "no dead letters"))]);
    for (const b of document.querySelectorAll("[data-all]")) b.disabled = !writable || !d.total;
  }

  function drawBounces(b) {
    fill("#bounces tbody", b.by_reason.length ? b.by_reason.map((r) => el("tr", {}, el("td", {}, r.reason), el("td", {}, r.outcome), num(r.n)))
      : [el("tr", {}, el("td", { colSpan: 3, class: "muted" }, "no bounces in 24 hours"))]);
    const w = $("#warmup");
    w.hidden = !b.warmup_placement;
    if (b.warmup_placement) fill("#warmup ul", Object.entries(b.warmup_placement).map(([k, v]) => el("li", {}, k + ": " + v)));
  }

  async function refresh() {
    if (paused) return;
    try {
      const [s, t, d, b] = await Promise.all([getJSON("/api/status"), getJSON("/api/throughput"),
        getJSON("/api/dlq?limit=100"), getJSON("/api/bounces")]);
      drawStatus(s); drawThroughput(t); drawDead(d); drawBounces(b);
      $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
      body.dataset.loaded = String(Number(body.dataset.loaded || 0) + 1);
    } catch (err) {
      say(String(err.message || err), true);
    }
  }

  function confirmThen(text, action) {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    paused = true;
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", async () => {
      paused = false;
      if (dialog.returnValue === "yes") await action();
      else refresh();
    }, { once: true });
  }

  async function change(what, id) {
    const r = await fetch("/api/dlq/" + what, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(id === null ? { all: true } : { id }),
    });
    const out = await r.json().catch(() => ({}));
    if (!r.ok) say((out.error || "HTTP " + r.status), true);
    else say((what === "retry" ? "retried " : "deleted ") + out.done + (out.skipped ? ", skipped " + out.skipped + " malformed" : ""));
    await refresh();
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    const what = b.dataset.action, all = b.hasAttribute("data-all"), id = all ? null : b.dataset.id;
    const label = what === "retry" ? "Retry" : "Delete";
    confirmThen(label + (all ? " every dead letter" : " dead letter " + id) + "?", () => change(what, id));
  });

  refresh();
  setInterval(refresh, 5000);
})();
