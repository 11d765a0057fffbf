// Jiefen: the live session page (text chat, waiting room, rooms). No framework.
// The server decides who is where and who receives what; this module only shows it.
// Protocol: realtime/meetings.py. Messages are kept by sequence number, so a replay after a
// reconnect never shows one twice; messages not yet acknowledged are kept (in this tab's
// sessionStorage) and sent again with the same id, which the server stores only once.
import { io } from "/static/vendor/socket.io-client-4.8.4/socket.io.esm.min.js";

const root = document.getElementById("meeting");
if (root && document.getElementById("meeting-live")) {
  start(root);
}

function start(root) {
  "use strict";
  const meetingId = Number(root.dataset.meetingId);
  const me = Number(root.dataset.userId);
  const manage = root.dataset.manage === "1";
  const t = JSON.parse(document.getElementById("meeting-strings").textContent);
  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $("meeting-connection"), notice: $("meeting-notice"), knock: $("meeting-knock"),
    live: $("meeting-live"), roomName: $("meeting-room-name"), mediator: $("meeting-mediator"),
    members: $("meeting-members"), log: $("meeting-log"), typing: $("meeting-typing"),
    compose: $("meeting-compose"), text: $("meeting-text"), error: $("meeting-error"),
    target: $("meeting-target"), waiting: $("meeting-waiting"), roster: $("meeting-roster"),
    notes: $("meeting-notes"), lock: $("meeting-lock"), end: $("meeting-end"),
    outcome: $("meeting-outcome"),
  };

  const seen = new Map(); // seq -> message
  let watermark = 0; // every message we may read up to here has been received
  let version = -1;
  let state = null;
  let syncing = null;
  let joined = false; // this connection has joined the session (a new one must join again)
  const storeKey = "jiefen.meeting." + meetingId + ".outbox";
  const outbox = new Map(loadOutbox()); // client id -> {text, room}

  const socket = io({ transports: ["websocket"], withCredentials: true });

  function loadOutbox() {
    try { return JSON.parse(sessionStorage.getItem(storeKey) || "[]"); } catch (e) { return []; }
  }
  function saveOutbox() {
    try { sessionStorage.setItem(storeKey, JSON.stringify([...outbox])); } catch (e) { /* full */ }
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function say(element, text) { if (element) { element.textContent = text || ""; } }
  function request(event, payload, timeout) {
    return socket.timeout(timeout || 10000).emitWithAck(event, { meeting_id: meetingId, ...payload })
      .catch(() => ({ ok: false, error: "timeout", message: t.reconnecting }));
  }

  // -- connection and state --------------------------------------------------------------

  socket.on("connect", join);
  socket.on("disconnect", () => { joined = false; say(ui.connection, t.reconnecting); });
  socket.on("connect_error", () => say(ui.connection, t.reconnecting));
  socket.on("meeting.state", (s) => { if (s.meeting_id === meetingId) { apply(s); } });
  socket.on("meeting.chat", (m) => { if (m.meeting_id === meetingId) { add(m); } });
  socket.on("meeting.typing", showTyping);
  socket.on("meeting.peer_joined", () => {}); // media connections: a later slice
  socket.on("meeting.peer_left", () => {});
  socket.on("meeting.signal", () => {});

  async function join() {
    say(ui.connection, t.connecting);
    state = null; // whatever we had, the state after (re)joining is new: replay what we missed
    const ack = await request("meeting.join", {});
    if (!ack.ok) {
      if (ack.error === "timeout") { return; } // the next connection joins again
      finish(ack.message);
      return;
    }
    joined = true;
    say(ui.connection, t.connected);
    apply(ack.state);
  }

  function finish(text) {
    ui.live.hidden = true;
    ui.knock.hidden = true;
    ui.notice.hidden = false;
    say(ui.notice, text);
  }

  function apply(s) {
    if (s.version < version) { return; }
    const before = state;
    version = s.version;
    state = s;
    const you = s.you;
    ui.knock.hidden = true;
    if (s.status === "ended" || s.status === "cancelled") {
      finish(s.status === "ended" ? t.ended : t.cancelled);
      return;
    }
    if (you.state !== "admitted") {
      ui.live.hidden = true;
      ui.notice.hidden = false;
      if (you.state === "waiting") {
        say(ui.notice, s.mediator === "away" ? t.waiting_absent : t.waiting);
      } else if (you.state === "turned_away") {
        say(ui.notice, t.turned_away);
        ui.knock.hidden = s.locked;
      } else if (you.state === "removed") {
        say(ui.notice, t.removed);
      }
      return;
    }
    ui.notice.hidden = !s.locked;
    say(ui.notice, s.locked ? t.locked : "");
    ui.live.hidden = false;
    say(ui.roomName, t.rooms[you.room] || you.room);
    say(ui.mediator, manage ? "" : t["mediator_" + s.mediator] || "");
    showMembers(s);
    if (manage) { showRoster(s); }
    const entered = !before || before.you.state !== "admitted" || before.you.room !== you.room;
    if (entered) { sync().then(flush); }
  }

  function showMembers(s) {
    ui.members.replaceChildren();
    const here = manage ? s.seats.filter((p) => p.state === "admitted" && p.room === s.you.room) : s.seats;
    if (!here.length) {
      const li = document.createElement("li");
      li.textContent = t.alone;
      ui.members.append(li);
    }
    for (const p of here) {
      const li = document.createElement("li");
      li.textContent = p.name + " · " + (t.sides[p.side] || p.side) + (p.connected ? "" : " (" + t.offline + ")");
      ui.members.append(li);
    }
  }

  // -- the mediator's controls -----------------------------------------------------------

  function button(label, action, extra) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link-button";
    b.textContent = label;
    b.dataset.action = action;
    Object.assign(b.dataset, extra);
    return b;
  }

  function showRoster(s) {
    ui.waiting.replaceChildren();
    ui.roster.replaceChildren();
    for (const p of s.seats) {
      const li = document.createElement("li");
      const label = document.createElement("span");
      const where = p.state === "admitted" ? t.rooms[p.room] : t.states[p.state];
      label.textContent = p.name + " · " + (t.sides[p.side] || p.side) + " · " + where + (p.connected ? "" : " (" + t.offline + ")");
      li.append(label);
      const id = String(p.user_id);
      if (p.state === "waiting") {
        li.append(" ", button(t.admit, "meeting.admit", { userId: id }), " ", button(t.turn_away, "meeting.turn_away", { userId: id }));
        ui.waiting.append(li);
        continue;
      }
      if (p.state === "admitted") {
        const rooms = p.side === "claimant" ? ["joint", "caucus_claimant"] : p.side === "respondent" ? ["joint", "caucus_respondent"] : ["joint"];
        for (const room of rooms) {
          if (room !== p.room) { li.append(" ", button("→ " + t.rooms[room], "meeting.move", { userId: id, room: room })); }
        }
        li.append(" ", button(t.remove, "meeting.remove", { userId: id }));
      }
      ui.roster.append(li);
    }
    ui.lock.checked = s.locked;
  }

  async function control(event, payload) {
    say(ui.error, "");
    const ack = await request(event, payload);
    if (!ack.ok) { say(ui.error, ack.message); }
  }

  if (manage) {
    root.addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) { return; }
      const d = b.dataset;
      if (d.action === "meeting.remove" && !window.confirm(t.confirm_remove)) { return; }
      if (d.action) {
        const payload = { user_id: Number(d.userId) };
        if (d.room) { payload.room = d.room; }
        control(d.action, payload);
      } else if (d.moveSide) {
        control("meeting.move", { side: d.moveSide, room: d.room });
      } else if ("moveSelf" in d) {
        control("meeting.move", { user_id: me, room: d.room });
      }
    });
    ui.lock.addEventListener("change", () => control("meeting.lock", { locked: ui.lock.checked }));
    ui.end.addEventListener("submit", (e) => {
      e.preventDefault();
      if (window.confirm(t.confirm_end)) { control("meeting.end", { outcome: ui.outcome.value }); }
    });
  }
  ui.knock.addEventListener("click", join);

  // -- chat ------------------------------------------------------------------------------

  async function sync() {
    if (syncing) { return syncing; }
    syncing = (async () => {
      for (;;) {
        const ack = await request("meeting.sync", { after_seq: watermark });
        if (!ack.ok) { break; }
        ack.messages.forEach(add);
        watermark = Math.max(watermark, ack.upto);
        if (!ack.more) { break; }
      }
    })().finally(() => { syncing = null; });
    return syncing;
  }

  function add(m) {
    if (seen.has(m.seq)) { return; }
    seen.set(m.seq, m);
    const pending = document.querySelector('[data-client-id="' + CSS.escape(m.client_id) + '"]');
    if (pending && m.sender_id === me) { pending.remove(); }
    const list = m.room === "notes" && ui.notes ? ui.notes : ui.log;
    const li = document.createElement("li");
    li.className = "meeting-message room-" + m.room + (m.sender_id === me ? " mine" : "");
    li.dataset.seq = String(m.seq);
    const who = document.createElement("strong");
    who.textContent = m.sender_id === me ? t.you : m.sender_name;
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = t.rooms[m.room] || m.room;
    const time = document.createElement("time");
    time.dateTime = m.sent_at;
    time.textContent = new Date(m.sent_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const body = document.createElement("p");
    body.textContent = m.text;
    li.append(who, " ", tag, " ", time, body);
    // Keep the list in sequence order, whatever order messages arrive in.
    const after = [...list.children].find((c) => c.dataset.seq && Number(c.dataset.seq) > m.seq);
    list.insertBefore(li, after || null);
    li.scrollIntoView({ block: "nearest" });
  }

  function showPending(id, item) {
    const li = document.createElement("li");
    li.className = "meeting-message mine pending";
    li.dataset.clientId = id;
    li.textContent = item.text + " · " + t.sending;
    ui.log.append(li);
  }

  async function send(id) {
    const item = outbox.get(id);
    if (!item || !socket.connected || !joined) { return; } // sent again after the next join
    const ack = await request("meeting.chat", { client_id: id, text: item.text, room: item.room || null });
    if (ack.ok) {
      outbox.delete(id);
      saveOutbox();
      if (!seen.has(ack.seq)) { sync(); }
    } else if (ack.error === "timeout" || ack.error === "not_joined") {
      // Kept: the next join sends it again, with the same id.
    } else if (ack.error === "rate_limited") {
      say(ui.error, ack.message);
      setTimeout(() => send(id), 3000);
    } else {
      outbox.delete(id);
      saveOutbox();
      say(ui.error, ack.message);
      const pending = document.querySelector('[data-client-id="' + CSS.escape(id) + '"]');
      if (pending) { pending.remove(); }
    }
  }

  function flush() {
    for (const [id, item] of outbox) {
      if (!document.querySelector('[data-client-id="' + CSS.escape(id) + '"]')) { showPending(id, item); }
      send(id);
    }
  }

  ui.compose.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.text.value.trim();
    if (!text) { return; }
    say(ui.error, "");
    const id = newId();
    const item = { text: text, room: ui.target && ui.target.value ? ui.target.value : null };
    outbox.set(id, item);
    saveOutbox();
    showPending(id, item);
    ui.text.value = "";
    send(id);
  });
  ui.text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); ui.compose.requestSubmit(); }
  });

  let lastTyping = 0;
  ui.text.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastTyping > 2000 && socket.connected) {
      lastTyping = now;
      socket.emit("meeting.typing", { meeting_id: meetingId });
    }
  });

  let typingTimer = null;
  function showTyping(data) {
    if (data.meeting_id !== meetingId || data.user_id === me) { return; }
    say(ui.typing, t.typing.replace("{name}", data.name));
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => say(ui.typing, ""), 3000);
  }
}
