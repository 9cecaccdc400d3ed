// Redraws the status page from /ui/status.json (kacheryfs/http/status_data.py documents its shape).
// Plain DOM, no libraries; text goes in through textContent only, never as HTML.
"use strict";

function humanBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
}

function el(tag, props, children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children || []) node.append(c);
  return node;
}

function setText(id, text) { document.getElementById(id).textContent = text; }

function drawTransfers(transfers) {
  const body = document.getElementById("transfers");
  body.replaceChildren(...transfers.map(t => {
    const bar = el("progress", {max: t.size, value: t.bytesPresent});
    const link = el("a", {href: "/sha1/" + t.sha1 + "/"}, [el("code", {textContent: t.sha1})]);
    const row = el("tr", {}, [
      el("td", {}, [link]),
      el("td", {}, [bar, " " + (100 * t.fraction).toFixed(1) + " %"]),
      el("td", {textContent: humanBytes(t.bytesPresent) + " / " + humanBytes(t.size)}),
      el("td", {textContent: humanBytes(t.rateBytesPerSecond) + "/s"}),
      el("td", {textContent: t.source || ""}),
    ]);
    row.dataset.sha1 = t.sha1;
    return row;
  }));
  document.getElementById("no-transfers").hidden = transfers.length > 0;
}

function reachItem(r) {
  const state = r.reachable === true ? "ok" : r.reachable === false ? "bad" : "unknown";
  const latency = r.latencySeconds === null ? "" : " " + (1000 * r.latencySeconds).toFixed(0) + " ms";
  const note = r.error ? " (" + r.error + ")" : (r.reachable === null ? " (checking)" : "");
  return el("li", {className: state, textContent: r.label + latency + note});
}

function drawChannels(channels) {
  const box = document.getElementById("channels");
  if (channels.length === 0) {
    box.replaceChildren(el("p", {className: "muted", textContent: "No channels: a local node."}));
    return;
  }
  box.replaceChildren(...channels.map(c => {
    const items = c.peers.map(reachItem);
    if (c.bucket) items.push(reachItem(c.bucket));
    return el("div", {className: "channel"}, [
      el("strong", {textContent: c.name}), " ",
      el("span", {className: "muted", textContent: c.roles.join(", ")}),
      items.length ? el("ul", {}, items) : el("p", {className: "muted", textContent: "no peers, no bucket"}),
    ]);
  }));
}

function drawErrors(errors) {
  document.getElementById("errors").replaceChildren(...errors.map(e => el("tr", {className: "error-row"}, [
    el("td", {textContent: new Date(e.time * 1000).toLocaleTimeString()}),
    el("td", {textContent: e.level}),
    el("td", {textContent: e.message}),
  ])));
  document.getElementById("no-errors").hidden = errors.length > 0;
}

function draw(s) {
  setText("storage-blobs", s.storage.blobs);
  setText("storage-bytes", humanBytes(s.storage.bytes));
  setText("storage-owned", humanBytes(s.storage.ownedBytes));
  setText("storage-cache", humanBytes(s.storage.cacheBytes));
  setText("storage-limit", s.storage.cacheLimitBytes ? humanBytes(s.storage.cacheLimitBytes) : "none");
  setText("counter-requests", s.counters.requests);
  setText("mount-point", s.mountPoint || "not mounted");
  drawTransfers(s.transfers);
  drawChannels(s.channels);
  drawErrors(s.recentErrors);
  setText("updated", new Date().toLocaleTimeString());
}

function startPolling(intervalMs) {
  // A token given in the page's address (?token=...) opens the JSON too.
  const token = new URLSearchParams(window.location.search).get("token");
  const url = "/ui/status.json" + (token ? "?token=" + encodeURIComponent(token) : "");
  async function poll() {
    try {
      const r = await fetch(url, {cache: "no-store"});
      if (r.ok) draw(await r.json());
      else setText("updated", "node answered HTTP " + r.status);
    } catch (e) {
      setText("updated", "node unreachable (" + e.message + ")");
    }
    window.setTimeout(poll, intervalMs);
  }
  poll();
}
