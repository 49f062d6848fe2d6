// The hes status page: poll /api/status and re-render, no framework, nothing from a CDN.
// Every value goes into the page as text (textContent), never as HTML: meter ids, error
// messages and alarm names come from the field.
"use strict";

(() => {
  const params = new URLSearchParams(window.location.search);
  const everySeconds = Math.max(0.5, Number(params.get("every")) || 3);
  const TOKEN_KEY = "hes-status-token";
  let polls = 0;
  let lastOk = null;
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function text(id, value) {
    $(id).textContent = value === null || value === undefined ? "-" : String(value);
  }

  function pct(rate, digits = 3) {
    return rate === null || rate === undefined ? "no data" : `${(100 * rate).toFixed(digits)} %`;
  }

  function time(iso) {
    return iso ? new Date(iso).toLocaleString() : "-";
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
  }

  // What the service loop reports, as one line: lists joined by "; ", objects as "key value".
  function summary(value) {
    if (value === null || value === undefined) return "-";
    if (Array.isArray(value)) return value.length ? value.map(summary).join("; ") : "none";
    if (typeof value === "object") {
      return Object.entries(value).map(([k, v]) => `${k.replace(/_/g, " ")} ${summary(v)}`).join(", ");
    }
    return String(value);
  }

  // A table cell: a string, or a Node (a bar), or {text, cls}.
  function cell(value) {
    const td = document.createElement("td");
    if (value instanceof Node) {
      td.appendChild(value);
    } else if (value && typeof value === "object") {
      td.textContent = value.text;
      td.className = value.cls || "";
    } else {
      td.textContent = value === null || value === undefined ? "-" : String(value);
    }
    return td;
  }

  function fill(tableId, items, cells, empty) {
    const body = $(tableId).tBodies[0];
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      for (const value of cells(item)) tr.appendChild(cell(value));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell({ text: empty, cls: "empty" });
      td.colSpan = $(tableId).tHead ? $(tableId).tHead.rows[0].cells.length : 2;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function bars(final, first) {
    const bar = document.createElement("div");
    bar.className = "bar";
    for (const [rate, cls] of [[final, "final"], [first, "first"]]) {
      const part = document.createElement("div");
      part.className = `fill ${cls}`;
      part.style.width = rate === null || rate === undefined ? "0" : `${100 * rate}%`;
      bar.appendChild(part);
    }
    return bar;
  }

  function rateClass(rate) {
    if (rate === null || rate === undefined) return "nodata";
    return rate >= 0.9999 ? "good" : rate >= 0.99 ? "warn" : "bad";
  }

  function render(s) {
    const day = s.collection_day;
    text("service", `up ${duration(s.service.uptime_s)} since ${time(s.service.started)}`);
    text("day", `${day.day} (${s.service.timezone})`);
    for (const [id, rate] of [["final-rate", day.success_rate], ["first-pass-rate", day.first_pass_rate]]) {
      text(id, pct(rate));
      $(id).className = `figure ${rateClass(rate)}`;
    }
    $("final-bar").style.width = day.success_rate === null ? "0" : `${100 * day.success_rate}%`;
    $("first-pass-bar").style.width =
      day.first_pass_rate === null ? "0" : `${100 * day.first_pass_rate}%`;
    text("count-expected", day.expected);
    text("count-complete", day.complete);
    text("count-failed", day.failed);
    text("count-not-collected", day.not_collected);
    text("count-not-expected", day.not_expected);
    text("count-intervals-missing", day.intervals_missing);
    text("kpi-as-of", `figures as of ${time(day.computed_at)}`);

    fill("history", s.history.slice().reverse(), (d) => [
      d.day,
      { text: pct(d.success_rate, 2), cls: rateClass(d.success_rate) },
      { text: pct(d.first_pass_rate, 2), cls: rateClass(d.first_pass_rate) },
      bars(d.success_rate, d.first_pass_rate),
      d.expected,
      d.failed,
      d.not_collected,
      d.not_expected,
    ], "no days");

    text("area-note", s.area_count > s.areas.length ? `worst ${s.areas.length} of ${s.area_count}` : "");
    fill("areas", s.areas, (a) => [
      a.area || "(none)",
      { text: pct(a.success_rate, 2), cls: rateClass(a.success_rate) },
      { text: pct(a.first_pass_rate, 2), cls: rateClass(a.first_pass_rate) },
      a.expected,
      a.failed,
      a.not_collected,
      a.not_expected,
    ], "no meters");

    text("failing-note", s.failing_total > s.failing_meters.length
      ? `worst ${s.failing_meters.length} of ${s.failing_total}` : `${s.failing_total}`);
    fill("failing", s.failing_meters, (m) => [
      m.meter_id,
      m.link_id,
      m.area,
      m.intervals_missing,
      { text: String(m.last_outcome).replace("_", " "), cls: m.last_outcome === "not_collected" ? "nodata" : "bad" },
      { text: m.last_error_class ? `${m.last_error_class}: ${m.last_error || ""}` : "-", cls: "wrap" },
    ], "none: every expected meter is complete");

    const flight = s.in_flight;
    text("in-flight-total", `${flight.total} on ${flight.links} link${flight.links === 1 ? "" : "s"}`
      + (flight.listed < flight.total ? ` (oldest ${flight.listed} listed)` : ""));
    fill("in-flight", flight.by_link, (l) => [
      l.link_id,
      l.sessions,
      {
        text: l.listed.map((x) => `${x.meter_id} (${x.job}, ${Math.round(x.age_s)} s)`).join(", "),
        cls: "wrap",
      },
    ], "none");

    text("queue-total", `${s.queue.total} queued`);
    fill("queue", Object.entries(s.queue.depth).filter(([, n]) => n > 0), ([kind, n]) => [kind, n], "empty");

    fill("alarms", s.alarms, (a) => [time(a.ts), a.meter_id, a.code, a.name], "none");
    fill("command-jobs", s.command_jobs, (j) => [
      j.id,
      j.kind,
      { text: j.state, cls: j.state === "failed" ? "bad" : "" },
      j.meters ? j.meters.join(", ") + (j.meter_count > j.meters.length ? ` +${j.meter_count - j.meters.length}` : "") : "all",
      j.requested_by,
      time(j.created_at),
    ], "no command jobs");
    fill("commands", s.commands, (c) => [
      time(c.requested_at),
      c.meter_id,
      c.command,
      c.requested_by,
      { text: c.outcome, cls: c.outcome === "ok" ? "good" : "bad" },
      c.output_state === null ? "-" : c.output_state ? "connected" : "disconnected",
      { text: c.error_class ? `${c.error_class}: ${c.error || ""}` : "-", cls: "wrap" },
    ], "no commands audited");
    fill("nodes", s.nodes.items, (n) => [
      n.name,
      { text: n.state, cls: n.state === "running" ? "" : "bad" },
      { text: n.alive ? "yes" : "no", cls: n.alive ? "good" : "bad" },
      n.leader ? "yes" : "",
      `${n.heartbeat_age_s.toFixed(1)} s ago`,
      n.jobs.length ? n.jobs.join(", ") : "-",
      n.links.length,
      n.sessions,
    ], "not a cluster (one process)");
    fill("live", Object.entries(s.live), ([key, value]) => [
      key.replace(/_/g, " "),
      { text: summary(value), cls: "wrap" },
    ], "nothing reported");
  }

  function showAuth(message) {
    $("auth").hidden = false;
    $("content").hidden = true;
    text("auth-message", message);
  }

  async function refresh() {
    const headers = { Accept: "application/json" };
    const token = window.sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const response = await fetch("/api/status", { headers, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        showAuth(token ? body.message || "token refused" : "");
        return false;
      }
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.message || `HTTP ${response.status}`);
      }
      const status = await response.json();
      render(status);
      polls += 1;
      lastOk = new Date(status.generated_at);
      $("auth").hidden = true;
      $("content").hidden = false;
      $("problem").hidden = true;
      const live = $("refreshed");
      live.textContent = `live, updated ${lastOk.toLocaleTimeString()}`;
      live.className = "live";
      live.dataset.polls = String(polls);
      live.dataset.refreshed = status.generated_at;
      return true;
    } catch (error) {
      const problem = $("problem");
      problem.hidden = false;
      problem.textContent = `Cannot refresh: ${error.message}`;
      const live = $("refreshed");
      live.className = "live stale";
      live.textContent = lastOk ? `stale since ${lastOk.toLocaleTimeString()}` : "not connected";
      return true;
    }
  }

  async function loop() {
    const keepGoing = await refresh();
    timer = keepGoing ? window.setTimeout(loop, everySeconds * 1000) : null;
  }

  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    window.sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    if (timer !== null) window.clearTimeout(timer);
    loop();
  });

  loop();
})();
