// The Tidings console's progressive script: the live template preview, the overview's
// charts and confirmations. Every server value is written with textContent or as an
// attribute through the DOM, never as HTML; email HTML goes only into sandboxed frames.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  function confirmations() {
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
  }

  // ---- dry run: what would this user get? -------------------------------------------
  function dryRun(form, previewForm) {
    const problem = document.getElementById("dry-run-problem");
    const list = document.getElementById("dry-run-result");
    const show = (message) => {
      problem.textContent = message;
      problem.hidden = !message;
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let data;
      let actor;
      try {
        data = JSON.parse(previewForm.elements.payload.value);
        const text = previewForm.elements.actor.value.trim();
        actor = text ? JSON.parse(text) : null;
      } catch (error) {
        show(`The payload or the actor is not valid JSON: ${error.message}`);
        return;
      }
      const user_id = form.elements.user.value.trim();
      let response;
      try {
        response = await fetch(form.dataset.dryRunUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
          body: JSON.stringify({ data, actor, user_id }),
        });
      } catch (error) {
        show(`The dry run could not be fetched: ${error.message}`);
        return;
      }
      const body = await response.json().catch(() => ({}));
      list.replaceChildren();
      if (!response.ok) {
        const error = body.error || {};
        show(`${error.field ? error.field + ": " : ""}${error.message || response.statusText}`);
        return;
      }
      show("");
      for (const channel of body.channels) {
        const item = document.createElement("li");
        item.dataset.channel = channel.channel;
        let words = `${channel.channel}: ${channel.decision}`;
        if (channel.reason) words += ` (${channel.reason})`;
        if (channel.until) words += ` until ${channel.until}`;
        item.textContent = words;
        list.append(item);
      }
      form.dataset.done = String(Number(form.dataset.done || 0) + 1);
    });
  }

  // ---- template preview ----------------------------------------------------------
  function preview(form) {
    const problem = document.getElementById("preview-problem");
    const show = (message) => {
      problem.textContent = message;
      problem.hidden = !message;
    };
    const set = (id, value) => {
      const node = document.getElementById(id);
      if (node) node.textContent = value || "";
    };
    let timer = null;
    let sequence = 0;

    async function render() {
      let data;
      let actor;
      try {
        data = JSON.parse(form.elements.payload.value);
      } catch (error) {
        show(`The payload is not valid JSON: ${error.message}`);
        return;
      }
      try {
        const text = form.elements.actor.value.trim();
        actor = text ? JSON.parse(text) : null;
      } catch (error) {
        show(`The actor is not valid JSON: ${error.message}`);
        return;
      }
      const locale = form.elements.locale.value || null;
      const mine = ++sequence;
      form.dataset.state = "rendering";
      let response;
      try {
        response = await fetch(form.dataset.previewUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
          body: JSON.stringify({ data, actor, locale }),
        });
      } catch (error) {
        show(`The preview could not be fetched: ${error.message}`);
        return;
      }
      const body = await response.json().catch(() => ({}));
      if (mine !== sequence) return; // a newer edit is on its way
      form.dataset.state = "idle";
      if (!response.ok) {
        const error = body.error || {};
        show(`${error.field ? error.field + ": " : ""}${error.message || response.statusText}`);
        return;
      }
      show("");
      if (body.in_app) {
        set("in-app-title", body.in_app.title);
        set("in-app-body", body.in_app.body);
        set("in-app-url", body.in_app.action_url);
      }
      if (body.email) {
        set("email-subject", body.email.subject);
        set("email-locale", body.email.locale);
        set("email-text", body.email.text);
        const frame = document.getElementById("email-html");
        if (frame) frame.srcdoc = body.email.html;
      }
      const url = new URL(window.location.href);
      if (locale) url.searchParams.set("locale", locale);
      else url.searchParams.delete("locale");
      window.history.replaceState(null, "", url);
      form.dataset.rendered = String(mine);
    }

    const soon = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(render, 250);
    };
    form.addEventListener("input", soon);
    form.addEventListener("change", soon);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      render();
    });
  }

  // ---- charts -------------------------------------------------------------------
  const W = 600;
  const H = 180;
  const PAD = { left: 44, right: 12, top: 22, bottom: 22 };

  function node(name, attributes, text) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function tidy(value) {
    if (value >= 100 || Number.isInteger(value)) return String(Math.round(value));
    return value.toFixed(value >= 10 ? 1 : 2);
  }

  // One line per series; a null value breaks its line.
  function lineChart(svg, labels, series) {
    svg.replaceChildren();
    const values = series.flatMap((s) => s.values).filter((v) => v !== null);
    const top = Math.max(1, ...values);
    const n = Math.max(2, labels.length);
    const x = (i) => PAD.left + (i * (W - PAD.left - PAD.right)) / (n - 1);
    const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    svg.append(
      node("line", { x1: PAD.left, y1: y(0), x2: W - PAD.right, y2: y(0), class: "axis" }),
      node("line", { x1: PAD.left, y1: y(top), x2: W - PAD.right, y2: y(top), class: "grid" }),
      node("text", { x: PAD.left - 6, y: y(top) + 4, class: "tick", "text-anchor": "end" }, tidy(top)),
      node("text", { x: PAD.left - 6, y: y(0) + 4, class: "tick", "text-anchor": "end" }, "0"),
    );
    if (labels.length) svg.append(node("text", { x: x(0), y: H - 4, class: "tick" }, labels[0]));
    if (labels.length > 1) {
      const last = labels.length - 1;
      svg.append(
        node("text", { x: x(last), y: H - 4, class: "tick", "text-anchor": "end" }, labels[last]),
      );
    }
    series.forEach((s, index) => {
      let points = [];
      const flush = () => {
        if (points.length === 1) {
          const [px, py] = points[0].split(",");
          svg.append(node("circle", { cx: px, cy: py, r: 2.5, class: `dot ${s.cls}` }));
        } else if (points.length > 1) {
          svg.append(node("polyline", { points: points.join(" "), class: `line ${s.cls}` }));
        }
        points = [];
      };
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) flush();
        else points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      });
      flush();
      // A series may bring its own legend (the window's total, say); else its last point.
      const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
      const legend = s.legend !== undefined ? `${s.name}: ${s.legend}` :
        `${s.name}${last === undefined ? "" : ": " + tidy(last)}`;
      svg.append(node("text", { x: PAD.left + index * 190, y: 14, class: `legend ${s.cls}` }, legend));
    });
  }

  function charts(root) {
    const queue = [];
    const draw = (stats) => {
      // The legends sum up the whole window: the current minute has only just begun.
      const summary = stats.legend;
      const span = `in ${summary.minutes} min`;
      const seconds = (v) => (v === null ? "none" : `${tidy(v)} s`);
      lineChart(document.getElementById("chart-throughput"), stats.minutes, [
        { name: "events", values: stats.events_per_minute, cls: "s1",
          legend: `${summary.events} ${span}` },
        { name: "deliveries", values: stats.deliveries_per_minute, cls: "s2",
          legend: `${summary.deliveries} ${span}` },
      ]);
      lineChart(document.getElementById("chart-latency"), stats.minutes, [
        { name: "p50", values: stats.latency_seconds.p50, cls: "s1",
          legend: `${seconds(summary.latency_seconds.p50)} ${span}` },
        { name: "p95", values: stats.latency_seconds.p95, cls: "s3",
          legend: `${seconds(summary.latency_seconds.p95)} ${span}` },
      ]);
      queue.push({ at: stats.at.slice(11, 19), due: stats.queue.due, later: stats.queue.later });
      if (queue.length > 120) queue.shift();
      lineChart(document.getElementById("chart-queue"), queue.map((q) => q.at), [
        { name: "waiting", values: queue.map((q) => q.due), cls: "s1" },
        { name: "timers", values: queue.map((q) => q.later), cls: "s2" },
      ]);
      const counts = {
        events: stats.events_per_minute.reduce((a, b) => a + b, 0),
        due: stats.queue.due,
        later: stats.queue.later,
        dead: stats.dead_letters,
      };
      for (const [name, value] of Object.entries(counts)) {
        const element = document.querySelector(`[data-stat="${name}"]`);
        if (element) element.textContent = String(value);
      }
      root.dataset.updated = stats.at;
    };
    const poll = async () => {
      try {
        const response = await fetch(root.dataset.statsUrl, { credentials: "same-origin" });
        if (response.status === 401) {
          window.location.assign("/console/login?next=/console");
          return;
        }
        if (response.ok) draw(await response.json());
      } catch (error) {
        // The server is restarting or the network blinked: the next poll tries again.
      }
      window.setTimeout(poll, 5000);
    };
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    confirmations();
    const form = document.getElementById("preview-form");
    if (form) preview(form);
    const rehearsal = document.getElementById("dry-run-form");
    if (rehearsal && form) dryRun(rehearsal, form);
    const root = document.querySelector("[data-stats-url]");
    if (root) charts(root);
  });
})();
