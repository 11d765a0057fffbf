// Jiefen: the live session page (device check, waiting room, rooms, text chat, voice and video).
// No framework. The server decides who is where and who receives what; this module shows it.
// Protocol: realtime/meetings.py. Messages are kept by sequence number, so a replay after a
// reconnect never shows one twice; messages not yet acknowledged are kept (in this tab's
// sessionStorage) and sent again with the same id, which the server stores only once.
// Media: a mesh of RTCPeerConnections, one per other person in the same room, negotiated with
// the "perfect negotiation" pattern (the peer with the higher user id is the polite one), the
// signaling relayed by the server only within the room. Moving to another room closes every
// connection and opens new ones with the new room's members.
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
    outcome: $("meeting-outcome"), prejoin: $("meeting-prejoin"), check: $("meeting-check"),
    joinButton: $("meeting-join"), material: $("meeting-material"),
    recording: $("meeting-recording"), recordingText: $("meeting-recording-text"),
    recordingDetail: $("meeting-recording-detail"), consent: $("meeting-consent"),
    consentYes: $("meeting-consent-yes"), consentNo: $("meeting-consent-no"),
    withdraw: $("meeting-consent-withdraw"), record: $("meeting-record"),
    recordStop: $("meeting-record-stop"), recordVideo: $("meeting-record-video"),
  };
  const mode = root.dataset.mode;

  const seen = new Map(); // seq -> message
  let watermark = 0; // every message we may read up to here has been received
  let version = -1;
  let state = null;
  let syncing = null;
  let joined = false; // this connection has joined the session (a new one must join again)
  const storeKey = "jiefen.meeting." + meetingId + ".outbox";
  const outbox = new Map(loadOutbox()); // client id -> {text, room}

  let wantJoin = false; // the user pressed "join": every new connection joins again
  const socket = io({ transports: ["websocket"], withCredentials: true });
  const media = mode === "text" ? null : createMedia();

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

  socket.on("connect", () => { if (wantJoin) { join(); } else { check(); } });
  socket.on("disconnect", () => {
    joined = false;
    say(ui.connection, t.reconnecting);
    if (media) { media.closeAll(); } // reopened with the room's members after joining again
  });
  // The server is stopping (a restart, an upgrade): reconnect, after a random moment so that
  // not everyone arrives at once; the load balancer sends us to a process still up.
  socket.on("server.restarting", (m) => {
    setTimeout(() => { socket.disconnect(); socket.connect(); }, Math.random() * ((m && m.retry_ms) || 500));
  });
  socket.on("connect_error", () => { say(ui.connection, t.reconnecting); if (!wantJoin) { say(ui.check, t.check_failed); } });
  socket.on("meeting.state", (s) => { if (s.meeting_id === meetingId) { apply(s); } });
  socket.on("meeting.chat", (m) => { if (m.meeting_id === meetingId) { add(m); } });
  socket.on("meeting.typing", showTyping);
  socket.on("meeting.peer_joined", (p) => { if (media && p.meeting_id === meetingId && p.user_id !== me) { media.peerJoined(p); } });
  socket.on("meeting.peer_left", (p) => { if (media && p.meeting_id === meetingId) { media.close(p.user_id); } });
  socket.on("meeting.signal", (s) => { if (media && s.meeting_id === meetingId) { media.signal(s.from_user_id, s.payload); } });
  socket.on("meeting.presence", (p) => { if (media && p.meeting_id === meetingId) { media.presence(p); } });
  socket.on("meeting.media", (r) => { if (media && r.meeting_id === meetingId) { media.obey(r); } });

  // -- before joining: devices and a connectivity check ----------------------------------

  async function check() {
    const times = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const ack = await socket.timeout(5000).emitWithAck("meeting.ping", {}).catch(() => null);
      if (!ack || !ack.ok) { say(ui.check, t.check_failed); return; }
      times.push(performance.now() - started);
    }
    const ms = Math.round(times.sort((a, b) => a - b)[1]);
    let text = (ms > 400 ? t.check_slow : t.check_ok).replace("{ms}", String(ms));
    if (media && (await media.loadIce()).relay) { text += " " + t.relay; }
    say(ui.check, text);
    ui.joinButton.disabled = false;
  }

  ui.joinButton.addEventListener("click", () => {
    wantJoin = true;
    ui.prejoin.hidden = true;
    if (media) { media.startLive(); }
    if (socket.connected) { join(); }
  });
  if (media) { media.preview(); }

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
    if (media) { media.stop(); }
    ui.prejoin.hidden = true;
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
    // The page was drawn before the session opened: what it says of the plan is out of date.
    const badge = document.querySelector("[data-testid=meeting-status]");
    if (badge && t.statuses[s.status]) {
      badge.textContent = t.statuses[s.status];
      badge.className = "badge meeting-" + s.status;
    }
    const plan = $("meeting-plan");
    if (plan) { plan.hidden = s.status !== "scheduled"; }
    if (s.status === "ended" || s.status === "cancelled") {
      finish(s.status === "ended" ? t.ended : t.cancelled);
      return;
    }
    if (you.state !== "admitted") {
      if (media) { media.closeAll(); }
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
    showRecording(s);
    if (media) { media.reconcile(s, before); }
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
      li.dataset.userId = String(p.user_id);
      li.textContent = describe(p);
      ui.members.append(li);
    }
    // The recorder is a participant everyone in the room sees.
    const r = roomRecording(s);
    if (r && r.status === "recording" && !r.paused) {
      const li = document.createElement("li");
      li.className = "meeting-recorder";
      li.dataset.testid = "recorder-member";
      li.textContent = "● " + t.recorder;
      ui.members.append(li);
    }
  }

  // -- recording: consent, the indicator, the mediator's controls ------------------------

  function roomRecording(s) {
    return (s.recordings || []).find((r) => r.room === s.you.room) || null;
  }

  let recordingShown = null; // the recording of our room last shown, to say when it stops
  let stoppedTimer = null;
  function showRecording(s) {
    if (!ui.recording) { return; }
    const r = roomRecording(s);
    if (recordingShown && !r && recordingShown.room === s.you.room) {
      // It stopped (or was refused): say so for a while.
      ui.recording.hidden = false;
      ui.recording.dataset.status = "stopped";
      say(ui.recordingText, recordingShown.status === "recording" ? t.rec_stopped : t.rec_not_recorded);
      say(ui.recordingDetail, "");
      ui.consent.hidden = true;
      ui.withdraw.hidden = true;
      if (manage && ui.record) { ui.record.hidden = false; ui.recordStop.hidden = true; }
      recordingShown = null;
      clearTimeout(stoppedTimer);
      stoppedTimer = setTimeout(() => { if (state && !roomRecording(state)) { ui.recording.hidden = true; } }, 8000);
      return;
    }
    recordingShown = r;
    if (r) { clearTimeout(stoppedTimer); }
    const elsewhere = manage ? (s.recordings || []).filter((x) => x.room !== s.you.room) : [];
    ui.recording.hidden = !r && !elsewhere.length;
    ui.recording.dataset.status = r ? (r.paused && r.status === "recording" ? "paused" : r.status) : "";
    let text = "";
    let detail = "";
    if (r) {
      if (r.status === "asking") {
        text = r.you === "asked" ? t.rec_asked_you : t.rec_asking;
      } else {
        text = r.you === "asked" || r.you === "no" ? t.rec_not_you + " " + t.rec_asked_you : t.rec_recording;
        if (r.paused) { text = t.rec_paused; }
      }
      if (r.video) { text += " " + t.rec_video; }
      if (r.waiting.length) { detail = t.rec_waiting.replace("{names}", r.waiting.join("、")); }
    } else {
      text = elsewhere.map((x) => (x.status === "recording" ? t.rec_other_room : t.rec_asking_other).replace("{room}", t.rooms[x.room] || x.room)).join(" ");
    }
    say(ui.recordingText, text);
    say(ui.recordingDetail, detail);
    ui.consent.hidden = !(r && r.you === "asked");
    ui.withdraw.hidden = !(r && r.you === "yes" && !manage);
    if (manage && ui.record) {
      ui.record.hidden = Boolean(r);
      ui.recordStop.hidden = !r;
      ui.recordStop.dataset.recordingId = r ? String(r.id) : "";
    }
  }

  async function answerRecording(agree) {
    const r = state && roomRecording(state);
    if (!r) { return; }
    say(ui.error, "");
    const ack = await request("meeting.consent", { recording_id: r.id, agree: agree });
    if (!ack.ok) { say(ui.error, ack.message); }
  }
  if (ui.consentYes) {
    ui.consentYes.addEventListener("click", () => answerRecording(true));
    ui.consentNo.addEventListener("click", () => answerRecording(false));
    ui.withdraw.addEventListener("click", () => { if (window.confirm(t.confirm_withdraw)) { answerRecording(false); } });
  }
  if (manage && ui.record) {
    ui.record.addEventListener("click", () => control("meeting.record", { video: Boolean(ui.recordVideo && ui.recordVideo.checked) }));
    ui.recordStop.addEventListener("click", () => control("meeting.record_stop", { recording_id: Number(ui.recordStop.dataset.recordingId) }));
  }

  function describe(p) {
    const parts = [p.name, t.sides[p.side] || p.side];
    if (p.connected && t.devices[p.device]) { parts.push(t.devices[p.device]); }
    const heard = media && media.heard(p.user_id);
    if (heard) {
      if (!heard.audio) { parts.push(t.mic_off); }
      if (mode === "video" && !heard.video) { parts.push(t.camera_is_off); }
      if (t.quality[heard.quality]) { parts.push(t.quality[heard.quality]); }
    }
    return parts.join(" · ") + (p.connected ? "" : " (" + t.offline + ")");
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
      label.textContent = describe(p) + " · " + where;
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
        if (media) {
          li.append(" ", button(t.mute_other, "meeting.media", { userId: id, media: "mute_audio" }));
          li.append(" ", button(t.ask_unmute, "meeting.media", { userId: id, media: "ask_unmute" }));
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
        if (d.media) { payload.action = d.media; }
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
    if (m.material_url) {
      const link = document.createElement("a");
      link.href = m.material_url;
      link.target = "_blank";
      link.rel = "noopener";
      link.className = "meeting-evidence";
      link.textContent = "📎 " + m.material_title;
      li.append(link);
    }
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
    const payload = { client_id: id, text: item.text, room: item.room || null };
    if (item.material_id) { payload.material_id = item.material_id; }
    const ack = await request("meeting.chat", payload);
    if (ack.ok) {
      outbox.delete(id);
      saveOutbox();
      if (!seen.has(ack.seq)) { sync(); }
    } else if (ack.error === "timeout" || ack.error === "not_joined") {
      // Kept: the next join sends it again, with the same id.
    } else if (ack.error === "rate_limited" || ack.error === "unavailable") {
      // Kept and sent again with the same id (the server stores it once): a burst, or the
      // database away for a moment (a restart).
      say(ui.error, ack.message);
      setTimeout(() => send(id), ack.error === "unavailable" ? 5000 : 3000);
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
    const material = ui.material && ui.material.value ? ui.material.selectedOptions[0] : null;
    const text = ui.text.value.trim() || (material ? material.textContent : "");
    if (!text) { return; }
    say(ui.error, "");
    const id = newId();
    const item = { text: text, room: ui.target && ui.target.value ? ui.target.value : null };
    if (material) { item.material_id = Number(material.value); ui.material.value = ""; }
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

  // -- voice and video -------------------------------------------------------------------

  function createMedia() {
    const video = mode === "video";
    const m = {
      stream: null, // this participant's microphone (and camera)
      peers: new Map(), // user id -> {pc, polite, makingOffer, ignoreOffer, tile}
      heardFrom: new Map(), // user id -> their last presence report
      iceServers: [],
      room: null,
      quality: "unknown",
      live: false,
    };
    const el = {
      preview: $("meeting-preview"), camera: $("meeting-camera"), mic: $("meeting-mic"),
      level: $("meeting-level"), status: $("meeting-device-status"), tiles: $("meeting-tiles"),
      micToggle: $("meeting-mic-toggle"), cameraToggle: $("meeting-camera-toggle"),
      notice: $("meeting-media-notice"), noticeText: $("meeting-media-notice-text"),
      unmute: $("meeting-unmute"), full: $("meeting-media-full"),
    };

    // Phones first: 640x360 at most, and the sender caps its bitrate (tune) so a mesh of six
    // fits a mobile uplink; audio is sent with high priority, video with low.
    function constraints() {
      const c = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
      if (el.mic && el.mic.value) { c.audio.deviceId = { exact: el.mic.value }; }
      if (video) {
        c.video = { width: { ideal: 640, max: 640 }, height: { ideal: 360, max: 360 }, frameRate: { ideal: 24, max: 30 } };
        if (el.camera && el.camera.value) { c.video.deviceId = { exact: el.camera.value }; } else { c.video.facingMode = "user"; }
      }
      return c;
    }

    async function acquire() {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        say(el.status, t.no_devices);
        return null;
      }
      try {
        return await navigator.mediaDevices.getUserMedia(constraints());
      } catch (e) {
        say(el.status, e && e.name === "NotAllowedError" ? t.device_denied : t.no_devices);
        return null;
      }
    }

    async function listDevices() {
      const devices = await navigator.mediaDevices.enumerateDevices();
      for (const [select, kind] of [[el.camera, "videoinput"], [el.mic, "audioinput"]]) {
        if (!select) { continue; }
        const current = select.value;
        select.replaceChildren();
        devices.filter((d) => d.kind === kind).forEach((d, i) => {
          const option = new Option(d.label || kind + " " + (i + 1), d.deviceId);
          select.append(option);
        });
        const used = m.stream && m.stream.getTracks().find((tr) => tr.kind + "input" === kind);
        const id = current || (used && used.getSettings().deviceId);
        if (id) { select.value = id; }
      }
    }

    let meterStop = null;
    function meter(stream) {
      if (meterStop) { meterStop(); meterStop = null; }
      if (!el.level || !stream.getAudioTracks().length || !window.AudioContext) { return; }
      const context = new AudioContext();
      const analyser = context.createAnalyser();
      context.createMediaStreamSource(stream).connect(analyser);
      const data = new Uint8Array(analyser.fftSize);
      let running = true;
      (function tick() {
        if (!running) { return; }
        analyser.getByteTimeDomainData(data);
        let peak = 0;
        for (const v of data) { peak = Math.max(peak, Math.abs(v - 128) / 128); }
        el.level.value = peak;
        requestAnimationFrame(tick);
      })();
      meterStop = () => { running = false; context.close(); };
    }

    function useStream(stream) {
      const old = m.stream;
      m.stream = stream;
      if (el.preview) { el.preview.srcObject = stream; }
      if (stream) { meter(stream); }
      // Peers already connected get the new tracks in place of the old ones; a connection
      // opened before the camera was ready (it only received) starts sending too.
      for (const [id, peer] of m.peers) {
        for (const transceiver of peer.pc.getTransceivers()) {
          if (transceiver.stopped || transceiver.currentDirection === "stopped") { continue; }
          const kind = transceiver.receiver.track.kind;
          const track = stream ? stream.getTracks().find((tr) => tr.kind === kind) : null;
          if (!track) { continue; }
          if (transceiver.direction === "recvonly" && id === RECORDER) { continue; } // fixed at its offer
          transceiver.sender.replaceTrack(track);
          if (transceiver.direction === "recvonly") {
            transceiver.sender.setStreams(stream);
            transceiver.direction = "sendrecv"; // renegotiates
          }
        }
      }
      if (old) { old.getTracks().forEach((tr) => tr.stop()); }
      showLocal();
    }

    m.preview = async () => {
      useStream(await acquire());
      if (m.stream) { await listDevices(); }
      for (const select of [el.camera, el.mic]) {
        if (select) { select.addEventListener("change", async () => useStream(await acquire())); }
      }
    };

    m.loadIce = async () => {
      try {
        const response = await fetch(root.dataset.iceUrl, { credentials: "same-origin" });
        if (response.ok) { m.iceServers = (await response.json()).iceServers || []; }
      } catch (e) { /* host candidates still work */ }
      return { relay: m.iceServers.some((s) => [].concat(s.urls).some((u) => u.startsWith("turn"))) };
    };

    m.startLive = () => {
      m.live = true;
      if (meterStop) { meterStop(); meterStop = null; }
      showLocal();
      setInterval(measure, 5000);
    };

    m.stop = () => {
      m.closeAll();
      if (m.stream) { m.stream.getTracks().forEach((tr) => tr.stop()); }
      if (meterStop) { meterStop(); }
      m.stream = null;
    };

    // -- tiles -----------------------------------------------------------------------------

    function tile(id, name, local) {
      const figure = document.createElement("figure");
      figure.className = "meeting-tile" + (local ? " local" : "") + (video ? "" : " voice");
      figure.dataset.userId = String(id);
      const v = document.createElement("video");
      v.autoplay = true;
      v.playsInline = true;
      v.muted = local; // never play one's own microphone back
      const caption = document.createElement("figcaption");
      caption.textContent = name;
      figure.append(v, caption);
      el.tiles.append(figure);
      return { figure, video: v, caption };
    }

    let localTile = null;
    function showLocal() {
      if (!m.live || !el.tiles) { return; }
      if (!localTile) { localTile = tile(me, t.you, true); }
      localTile.video.srcObject = m.stream;
      localTile.figure.hidden = !m.stream;
      updateToggles();
    }

    // The server's recorder: a peer like the others (it only receives), while this room is
    // recorded and this participant agreed.
    const RECORDER = 0;

    function nameOf(id) {
      if (id === RECORDER) { return t.recorder; }
      const seat = state && state.seats.find((p) => p.user_id === id);
      return seat ? seat.name : "";
    }

    // -- peer connections (perfect negotiation) -------------------------------------------

    function send(to, payload) {
      if (to !== RECORDER) {
        socket.emit("meeting.signal", { meeting_id: meetingId, to: to, payload: payload });
        return;
      }
      // The recorder may refuse (the recording stopped, or is not reachable): start over
      // with a fresh connection a little later, if this room is still recorded with us.
      request("meeting.signal", { to: to, payload: payload }).then((ack) => {
        if (!ack.ok && payload.description) { retryRecorder(); }
      });
    }

    let recorderRetry = null;
    function retryRecorder() {
      m.close(RECORDER);
      clearTimeout(recorderRetry);
      recorderRetry = setTimeout(() => { if (state) { m.reconcile(state); } }, 3000);
    }

    function recordedHere() {
      const room = state && state.you.state === "admitted" ? state.you.room : null;
      return Boolean(room && (state.recordings || []).some((r) => r.room === room && r.status === "recording" && r.you === "yes" && !r.paused));
    }

    function tune(pc) {
      for (const sender of pc.getSenders()) {
        if (!sender.track) { continue; }
        const params = sender.getParameters();
        if (!params.encodings || !params.encodings.length) { continue; } // not negotiated yet
        const encoding = params.encodings[0];
        if (sender.track.kind === "video") {
          encoding.maxBitrate = 500000;
          encoding.maxFramerate = 24;
          encoding.priority = "low";
          encoding.networkPriority = "low";
          params.degradationPreference = "maintain-framerate";
        } else {
          encoding.priority = "high";
          encoding.networkPriority = "high";
        }
        sender.setParameters(params).catch(() => { /* an older browser: defaults */ });
      }
    }

    // What happened to one connection, for people and tests who wonder why it did not connect.
    function note(peer, text) {
      peer.trace.push(Math.round(performance.now()) + " " + text);
      if (peer.trace.length > 200) { peer.trace.shift(); }
    }

    function open(id) {
      let peer = m.peers.get(id);
      if (peer) { return peer; }
      const pc = new RTCPeerConnection({ iceServers: m.iceServers });
      peer = { pc, polite: me > id, makingOffer: false, ignoreOffer: false, early: [], trace: [], stalled: 0, session: null, tile: tile(id, nameOf(id), false) };
      note(peer, "open " + (peer.polite ? "polite" : "impolite"));
      if (id === RECORDER) { peer.tile.figure.classList.add("recorder"); }
      m.peers.set(id, peer);
      const stream = m.stream;
      const kinds = video ? ["audio", "video"] : ["audio"];
      for (const kind of kinds) {
        const track = stream && stream.getTracks().find((tr) => tr.kind === kind);
        if (track) { pc.addTrack(track, stream); } else { pc.addTransceiver(kind, { direction: "recvonly" }); }
      }
      const remote = new MediaStream();
      peer.tile.video.srcObject = remote;
      pc.ontrack = ({ track }) => {
        remote.addTrack(track);
        peer.tile.video.play().catch(() => {});
      };
      pc.onnegotiationneeded = async () => {
        // The first offer is the impolite side's (or ours, to the recorder, which never
        // offers): two first offers crossing each other could leave both sides waiting.
        if (peer.polite && id !== RECORDER && !pc.remoteDescription) { note(peer, "waits for their offer"); return; }
        try {
          peer.makingOffer = true;
          await pc.setLocalDescription();
          note(peer, "send " + pc.localDescription.type + " " + JSON.stringify(pc.localDescription.toJSON()).length);
          send(id, { description: pc.localDescription.toJSON() });
        } catch (e) {
          note(peer, "negotiation failed: " + e);
          console.warn("negotiation", e);
        } finally {
          peer.makingOffer = false;
        }
      };
      pc.onicecandidate = ({ candidate }) => { if (candidate) { note(peer, "cand out"); send(id, { candidate: candidate.toJSON() }); } };
      pc.onsignalingstatechange = () => { note(peer, "signaling " + pc.signalingState); if (pc.signalingState === "stable") { tune(pc); } };
      pc.oniceconnectionstatechange = () => {
        note(peer, "ice " + pc.iceConnectionState);
        if (pc.iceConnectionState !== "failed") { return; }
        // The recorder cannot restart ICE: a new connection instead.
        if (id === RECORDER) { retryRecorder(); } else { pc.restartIce(); }
      };
      pc.onconnectionstatechange = () => { note(peer, "connection " + pc.connectionState); peer.tile.figure.dataset.state = pc.connectionState; };
      // A negotiation lost on the way (a signal sent before the other side was in the room,
      // or an answer to an offer that was replaced) would leave the connection new for ever.
      // Every 8 s while it is, the polite side asks the impolite one to start over (it may
      // hold no connection to us at all, or one that waits for an answer we never got); the
      // impolite side starts over by itself after 16 s.
      const watchdog = () => {
        if (m.peers.get(id) !== peer) { return; }
        if (pc.connectionState === "new") {
          peer.stalled += 1;
          note(peer, "still new");
          if (peer.polite && id !== RECORDER) {
            send(id, { restart: true });
          } else if (!peer.polite && peer.stalled >= 2) {
            m.close(id);
            open(id);
            return;
          }
        }
        if (pc.connectionState !== "connected") { peer.watchdog = setTimeout(watchdog, 8000); }
      };
      peer.watchdog = setTimeout(watchdog, 8000);
      return peer;
    }

    // The session id of an SDP description ("o=- 4611731400430051336 2 IN IP4 …"): one per
    // connection, the same through renegotiations.
    function sessionOf(sdp) {
      const origin = /^o=\S+ (\S+)/m.exec(sdp || "");
      return origin ? origin[1] : null;
    }

    // The server relays signaling only between members of one room, so a signal is answered
    // even if it comes before the state that says the sender is here.
    m.signal = async (from, payload) => {
      if (!m.live) { return; }
      if (from === RECORDER && !recordedHere()) { return; } // late: the recording is over
      const peer = open(from);
      const pc = peer.pc;
      try {
        if (payload.restart) {
          // The polite side's connection never got going: the impolite side starts over.
          note(peer, "asked to restart");
          if (!peer.polite && pc.connectionState !== "connected") { m.close(from); open(from); }
          return;
        }
        if (payload.description) {
          const description = payload.description;
          note(peer, "got " + description.type + " in " + pc.signalingState + (peer.makingOffer ? " making" : ""));
          const collision = description.type === "offer" && (peer.makingOffer || pc.signalingState !== "stable");
          peer.ignoreOffer = !peer.polite && collision;
          if (peer.ignoreOffer) { note(peer, "ignored offer"); return; }
          let target = peer;
          // An offer from a new connection of theirs (its session differs from the one we
          // answered before): a new connection of ours for it, not a renegotiation.
          const session = sessionOf(description.sdp);
          if (description.type === "offer" && peer.session && session !== peer.session) {
            note(peer, "their new connection");
            m.close(from);
            target = open(from);
          }
          try {
            await target.pc.setRemoteDescription(description); // rolls back our own offer if need be
          } catch (e) {
            // The other side started over with a new connection (its DTLS keys changed):
            // start over too, with its offer.
            if (description.type !== "offer" || target !== peer) { throw e; }
            note(peer, "start over: " + e);
            m.close(from);
            target = open(from);
            await target.pc.setRemoteDescription(description);
          }
          target.session = session;
          if (description.type === "offer") {
            await target.pc.setLocalDescription();
            note(target, "send " + target.pc.localDescription.type + " " + JSON.stringify(target.pc.localDescription.toJSON()).length);
            send(from, { description: target.pc.localDescription.toJSON() });
          }
          for (const candidate of target.early.splice(0)) { await target.pc.addIceCandidate(candidate).catch(() => {}); }
          if (target !== peer) { return; }
          // Candidates that came before the description they belong to.
          for (const candidate of peer.early.splice(0)) { await pc.addIceCandidate(candidate).catch(() => {}); }
        } else if (payload.candidate) {
          if (!pc.remoteDescription) { note(peer, "cand early"); peer.early.push(payload.candidate); return; }
          note(peer, "cand in");
          try {
            await pc.addIceCandidate(payload.candidate);
          } catch (e) {
            if (!peer.ignoreOffer) { throw e; }
          }
        }
      } catch (e) {
        note(peer, "signal failed: " + e);
        console.warn("signal", e);
      }
    };

    m.close = (id) => {
      const peer = m.peers.get(id);
      if (!peer) { return; }
      m.peers.delete(id);
      clearTimeout(peer.watchdog);
      peer.pc.close();
      peer.tile.figure.remove();
    };

    m.closeAll = () => {
      for (const id of [...m.peers.keys()]) { m.close(id); }
      m.room = null;
    };

    m.peerJoined = (p) => {
      if (m.live && m.room === p.room) { open(p.user_id); report(); }
    };

    // The state says who is in our room: connections to exactly those who are connected.
    m.reconcile = (s) => {
      if (!m.live) { return; }
      const room = s.you.state === "admitted" ? s.you.room : null;
      if (!room) { m.closeAll(); return; }
      if (m.room && room !== m.room) { m.closeAll(); }
      m.room = room;
      // A mesh of at most six: the server says who in the room has voice and video.
      if (el.full) { el.full.hidden = s.you.media; }
      const here = new Set(s.you.media ? s.seats.filter((p) => p.state === "admitted" && p.room === room && p.connected && p.media && p.user_id !== me).map((p) => p.user_id) : []);
      const recorded = (s.recordings || []).find((r) => r.room === room && r.status === "recording" && r.you === "yes" && !r.paused);
      if (recorded && s.you.media) { here.add(RECORDER); }
      for (const id of [...m.peers.keys()]) { if (!here.has(id)) { m.close(id); } }
      for (const id of here) {
        const peer = open(id);
        peer.tile.caption.textContent = nameOf(id);
      }
      report();
    };

    // -- microphone and camera, and the mediator's requests --------------------------------

    function enabled(kind) {
      const track = m.stream && m.stream.getTracks().find((tr) => tr.kind === kind);
      return Boolean(track && track.enabled);
    }

    function setEnabled(kind, on) {
      if (!m.stream) { return; }
      m.stream.getTracks().filter((tr) => tr.kind === kind).forEach((tr) => { tr.enabled = on; });
      updateToggles();
      report();
    }

    function updateToggles() {
      if (el.micToggle) {
        const on = enabled("audio");
        el.micToggle.textContent = on ? t.mute : t.unmute;
        el.micToggle.setAttribute("aria-pressed", String(!on));
        el.micToggle.disabled = !m.stream;
      }
      if (el.cameraToggle) {
        const on = enabled("video");
        el.cameraToggle.textContent = on ? t.camera_off : t.camera_on;
        el.cameraToggle.setAttribute("aria-pressed", String(!on));
        el.cameraToggle.disabled = !m.stream;
      }
    }

    if (el.micToggle) { el.micToggle.addEventListener("click", () => setEnabled("audio", !enabled("audio"))); }
    if (el.cameraToggle) { el.cameraToggle.addEventListener("click", () => setEnabled("video", !enabled("video"))); }
    if (el.unmute) {
      el.unmute.addEventListener("click", () => {
        setEnabled("audio", true);
        el.notice.hidden = true;
      });
    }

    m.obey = (r) => {
      const text = { mute_audio: t.muted_by, mute_video: t.camera_off_by, ask_unmute: t.asked_unmute }[r.action];
      if (!text) { return; }
      if (r.action === "mute_audio") { setEnabled("audio", false); }
      if (r.action === "mute_video") { setEnabled("video", false); }
      say(el.noticeText, text.replace("{name}", r.by_name));
      el.unmute.hidden = r.action !== "ask_unmute" || !m.stream;
      el.notice.hidden = false;
    };

    // -- presence: what we tell the room about ourselves, and what we heard -----------------

    function report() {
      if (!joined || !m.room) { return; }
      socket.emit("meeting.presence", {
        meeting_id: meetingId, audio: enabled("audio"), video: enabled("video"), quality: m.quality,
      });
    }

    m.presence = (p) => {
      m.heardFrom.set(p.user_id, p);
      if (state) { showMembers(state); if (manage) { showRoster(state); } }
      const peer = m.peers.get(p.user_id);
      if (peer) {
        peer.tile.figure.classList.toggle("muted", !p.audio);
        peer.tile.figure.dataset.quality = p.quality;
      }
    };
    m.heard = (id) => m.heardFrom.get(id) || null;

    // Network quality from WebRTC statistics: round trip time and loss of the worst connection.
    async function measure() {
      if (!m.peers.size) { return; }
      let worst = "good";
      const rank = { good: 0, fair: 1, poor: 2 };
      for (const peer of m.peers.values()) {
        const q = await qualityOf(peer.pc);
        if (q && rank[q] > rank[worst]) { worst = q; }
      }
      if (worst !== m.quality) { m.quality = worst; report(); }
    }

    async function qualityOf(pc) {
      if (pc.connectionState !== "connected") { return pc.connectionState === "connecting" ? null : "poor"; }
      const stats = await pc.getStats();
      let rtt = 0;
      let lost = 0;
      let received = 0;
      stats.forEach((r) => {
        if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) { rtt = Math.max(rtt, r.currentRoundTripTime); }
        if (r.type === "inbound-rtp") { lost += r.packetsLost || 0; received += r.packetsReceived || 0; }
      });
      const loss = received + lost ? lost / (received + lost) : 0;
      if (rtt < 0.3 && loss < 0.02) { return "good"; }
      if (rtt < 0.8 && loss < 0.08) { return "fair"; }
      return "poor";
    }

    // For people and tests: what each connection has received and decoded so far.
    root.meetingStats = async () => {
      const out = [];
      for (const [id, peer] of m.peers) {
        const entry = { user_id: id, state: peer.pc.connectionState, framesDecoded: 0, audioBytes: 0, videoBytes: 0, frameHeight: 0, signaling: peer.pc.signalingState, ice: peer.pc.iceConnectionState, polite: peer.polite, trace: peer.trace.slice() };
        (await peer.pc.getStats()).forEach((r) => {
          if (r.type !== "inbound-rtp") { return; }
          if (r.kind === "video") {
            entry.framesDecoded += r.framesDecoded || 0;
            entry.videoBytes += r.bytesReceived || 0;
            entry.frameHeight = Math.max(entry.frameHeight, r.frameHeight || 0);
          } else {
            entry.audioBytes += r.bytesReceived || 0;
          }
        });
        out.push(entry);
      }
      return out;
    };

    return m;
  }
}
