/*
 * The console's map page: every device as a Leaflet marker whose colour AND
 * glyph say its state, an accessible list of the same devices, a legend, and
 * the live stream (Server-Sent Events) that moves and recolours markers and
 * prepends new events.  Plain JavaScript, no build step; Leaflet
 * (static/vendor/leaflet) is loaded before this file.
 *
 * What the page gives it (see docs/console.md, "Map, colours and vendored code"):
 *   <div id="map" data-api="/api/map" data-live="/api/live" data-events="/api/events"
 *        data-tiles="https://.../{z}/{x}/{y}.png" data-credit="..."
 *        data-language="ja" data-device-url="/device/"
 *        data-center-lat="36.08" data-center-lon="137.95" data-zoom="13"></div>
 *   <script type="application/json" id="labels">{"state_alarm": "警報", ...}</script>
 *   ul#devices, ul#events, ul#legend and #live (each optional).
 * Colours live only in console.css (custom properties); this file names classes.
 * Everything kept by a device's or an event's id is in a Map: an id is a string a device
 * chose ("constructor", "__proto__"...), never a property name.
 */
(function () {
  "use strict";

  // worst first, as cloud.console.model.marker_state orders them
  var STATES = ["alarm", "trap_closed", "fault", "offline", "warning", "ok", "unknown"];
  var STAGE_RANKS = [1, 2, 3, 4];
  var MAX_EVENTS = 50;
  var FIT_MAX_ZOOM = 16;

  // 24x24 glyphs, drawn in the marker's ink colour (currentColor)
  var GLYPHS = {
    alarm: '<path d="M12 2.5a1.5 1.5 0 0 0-1.5 1.5v.6A6 6 0 0 0 6 10.5V15l-2 2.2V18.5h16v-1.3L18 15v-4.5a6 6 0 0 0-4.5-5.9V4A1.5 1.5 0 0 0 12 2.5zM9.8 19.7a2.2 2.2 0 0 0 4.4 0z" fill="currentColor"/>',
    trap_closed: '<rect x="4" y="5" width="16" height="14" fill="none" stroke="currentColor" stroke-width="2.2"/><path d="M8.5 5v14M12 5v14M15.5 5v14" stroke="currentColor" stroke-width="2"/>',
    fault: '<path d="M14.8 3.2a5 5 0 0 0-5.6 6.6L3 16v2.2L5.8 21H8l6.2-6.2a5 5 0 0 0 6.6-5.6l-3 3-2.9-.9-.9-2.9z" fill="currentColor"/>',
    offline: '<circle cx="12" cy="12" r="6.5" fill="none" stroke="currentColor" stroke-width="2.5"/><path d="M4 20L20 4" stroke="currentColor" stroke-width="2.5" stroke-linecap="round"/>',
    warning: '<path d="M12 3.5L2.5 20.5h19z" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linejoin="round"/><path d="M12 9.5v5.5M12 17v1.6" stroke="currentColor" stroke-width="2.4"/>',
    ok: '<path d="M5 12.5l4.5 4.5L19 7.5" fill="none" stroke="currentColor" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/>',
    unknown: '<path d="M8.5 9a3.5 3.5 0 1 1 5.2 3c-1.1.6-1.7 1.3-1.7 2.6v.6M12 18v1.5" fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round"/>',
    water: '<path d="M2.5 8.5c3-2.8 6.5 2.8 9.5 0s6.5 2.8 9.5 0M2.5 14.5c3-2.8 6.5 2.8 9.5 0s6.5 2.8 9.5 0" fill="none" stroke="currentColor" stroke-width="2.3" stroke-linecap="round"/>'
  };

  function readLabels() {
    var node = document.getElementById("labels");
    if (!node) return {};
    try {
      return JSON.parse(node.textContent || "{}");
    } catch (e) {
      return {};
    }
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function numberOr(value, fallback) {
    var n = parseFloat(value);
    return isFinite(n) ? n : fallback;
  }

  function Console(root) {
    this.root = root;
    this.labels = readLabels();
    this.language = root.dataset.language === "en" ? "en" : "ja";
    this.deviceUrl = root.dataset.deviceUrl || "/device/";
    this.markers = new Map(); // device id -> L.Marker
    this.states = new Map(); // device id -> DeviceState
    this.seenEvents = new Set(); // event ids listed
    this.buffered = null; // live messages held while a reload is fetched
    this.reloading = null;
    this.reloadAgain = false;
    this.reloads = 0;
    this.opened = false;
    this.time = new Intl.DateTimeFormat(this.language === "en" ? "en-GB" : "ja-JP", {
      timeZone: "Asia/Tokyo", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit"
    });
    this.map = L.map(root, { keyboard: true, zoomControl: true }).setView(
      [numberOr(root.dataset.centerLat, 36.08), numberOr(root.dataset.centerLon, 137.95)],
      numberOr(root.dataset.zoom, 13)
    );
    this.tiles = null;
    if (root.dataset.tiles) this.useTiles(root.dataset.tiles, root.dataset.credit || "");
    this.layer = L.layerGroup().addTo(this.map);
    this.drawLegend();
    this.rememberListedEvents();
  }

  Console.prototype.t = function (key) {
    var text = this.labels[key];
    return typeof text === "string" ? text : key;
  };

  Console.prototype.useTiles = function (url, credit) {
    if (this.tiles) return;
    this.tiles = L.tileLayer(url, {
      attribution: escapeHtml(credit), maxZoom: 18, crossOrigin: false
    }).addTo(this.map);
  };

  /* The look of one device: its state, and for a water gauge whose stage made that
     state, the stage (coloured as 川の水位情報 colours it, glyph a wave and the rank). */
  Console.prototype.look = function (s) {
    var state = STATES.indexOf(s.state) >= 0 ? s.state : "unknown";
    var rank = s.water_stage_rank || 0;
    var byStage = rank >= 1 && !s.nap_alarm && (state === "alarm" || state === "warning");
    var words = this.t("state_" + state);
    if (byStage) words += (this.language === "en" ? ", " : "・") + this.t("rank_" + rank);
    return {
      state: state,
      stage: byStage ? rank : 0,
      classes: "marker-icon state-" + state + (byStage ? " stage-" + rank : ""),
      glyph: byStage ? GLYPHS.water : GLYPHS[state],
      badge: byStage ? String(rank) : "",
      words: words
    };
  };

  Console.prototype.iconHtml = function (look) {
    return '<span class="marker-pin"><svg viewBox="0 0 24 24" width="22" height="22" ' +
      'aria-hidden="true" focusable="false">' + look.glyph + "</svg>" +
      (look.badge ? '<span class="marker-badge">' + escapeHtml(look.badge) + "</span>" : "") +
      "</span>";
  };

  Console.prototype.name = function (s) {
    return s.name || s.device;
  };

  Console.prototype.popupHtml = function (s, look) {
    var lines = ['<div class="popup"><strong>' + escapeHtml(this.name(s)) + "</strong>",
      '<div class="popup-state">' + escapeHtml(look.words) + "</div>"];
    if (s.water_level_cm !== null && s.water_level_cm !== undefined) {
      lines.push("<div>" + escapeHtml(this.t("cap_water")) + ": " +
        escapeHtml(Number(s.water_level_cm).toFixed(1)) + " cm</div>");
    }
    lines.push("<div>" + escapeHtml(this.t("last_seen")) + ": " + escapeHtml(this.when(s.last_seen)) + "</div>");
    lines.push('<a href="' + escapeHtml(this.deviceUrl + encodeURIComponent(s.device)) + '">' +
      escapeHtml(s.device) + "</a></div>");
    return lines.join("");
  };

  Console.prototype.when = function (seconds) {
    if (seconds === null || seconds === undefined) return this.t("never");
    return this.time.format(new Date(seconds * 1000));
  };

  Console.prototype.dressMarker = function (marker, s, look) {
    var el = marker.getElement();
    if (!el) return;
    Array.prototype.slice.call(el.classList).forEach(function (name) {
      if (/^(state|stage)-/.test(name)) el.classList.remove(name);
    });
    look.classes.split(" ").forEach(function (name) { el.classList.add(name); });
    el.innerHTML = this.iconHtml(look);
    el.setAttribute("data-testid", "marker-" + s.device);
    el.setAttribute("data-state", look.state);
    el.setAttribute("data-stage", String(look.stage));
    // where the configuration puts it (the marker may be fanned out from it on screen)
    el.setAttribute("data-lat", String(s.lat));
    el.setAttribute("data-lon", String(s.lon));
    // the badge (a stage's rank) is visible text, so it is part of the name too
    var name = this.name(s) + ": " + look.words + (look.badge ? " " + look.badge : "");
    el.setAttribute("aria-label", name);
    el.setAttribute("title", name);
  };

  /* Add, move, recolour or remove the marker of one device. */
  Console.prototype.show = function (s) {
    this.states.set(s.device, s);
    var look = this.look(s);
    var marker = this.markers.get(s.device);
    var placed = typeof s.lat === "number" && typeof s.lon === "number";
    if (!placed) {
      if (marker) {
        this.layer.removeLayer(marker);
        this.markers.delete(s.device);
      }
    } else if (!marker) {
      marker = L.marker([s.lat, s.lon], {
        icon: L.divIcon({
          className: look.classes, html: this.iconHtml(look),
          iconSize: [36, 36], iconAnchor: [18, 18], popupAnchor: [0, -16]
        }),
        keyboard: true,
        riseOnHover: true
      });
      marker.bindPopup(this.popupHtml(s, look));
      marker.addTo(this.layer);
      this.markers.set(s.device, marker);
    } else {
      marker.setLatLng([s.lat, s.lon]);
      marker.setPopupContent(this.popupHtml(s, look));
    }
    if (marker && placed) {
      // the worst states on top
      marker.setZIndexOffset((STATES.length - STATES.indexOf(look.state)) * 100);
      this.dressMarker(marker, s, look);
    }
    this.listDevice(s, look);
    this.spread();
  };

  /* Devices at the same place (a detector and its trap on one post) would hide each
     other: their pins are fanned out around the point, the worst one in front. */
  Console.prototype.spread = function () {
    var markers = this.markers;
    var groups = new Map();
    markers.forEach(function (marker, id) {
      var at = marker.getLatLng();
      var key = at.lat.toFixed(6) + "," + at.lng.toFixed(6);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(id);
    });
    groups.forEach(function (group) {
      var ids = group.sort();
      for (var i = 0; i < ids.length; i++) {
        var el = markers.get(ids[i]).getElement();
        if (!el) continue;
        var dx = 0;
        var dy = 0;
        if (ids.length > 1) {
          var angle = (2 * Math.PI * i) / ids.length - Math.PI / 2;
          dx = Math.round(Math.cos(angle) * 20);
          dy = Math.round(Math.sin(angle) * 20);
        }
        el.style.marginLeft = (dx - 18) + "px";
        el.style.marginTop = (dy - 18) + "px";
      }
    });
  };

  /* A device no longer on the map (a reload did not list it): its marker and row go. */
  Console.prototype.forget = function (device) {
    var marker = this.markers.get(device);
    if (marker) this.layer.removeLayer(marker);
    this.markers.delete(device);
    this.states.delete(device);
    var list = document.getElementById("devices");
    if (!list) return;
    var items = list.querySelectorAll("li[data-device]");
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute("data-device") === device) items[i].remove();
    }
  };

  Console.prototype.listDevice = function (s, look) {
    var list = document.getElementById("devices");
    if (!list) return;
    var id = "device-" + s.device;
    var item = null;
    var items = list.querySelectorAll("li[data-device]");
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute("data-device") === s.device) item = items[i];
    }
    if (!item) {
      item = document.createElement("li");
      item.setAttribute("data-device", s.device);
    }
    item.setAttribute("data-testid", id);
    item.setAttribute("data-state", look.state);
    item.setAttribute("data-stage", String(s.water_stage_rank || 0));
    var where = typeof s.lat === "number" && typeof s.lon === "number" ? "" :
      ' <span class="device-where">(' + escapeHtml(this.t("position_unknown")) + ")</span>";
    item.innerHTML = '<span class="' + look.classes + ' marker-inline" aria-hidden="true">' +
      this.iconHtml(look) + "</span> " +
      '<a href="' + escapeHtml(this.deviceUrl + encodeURIComponent(s.device)) + '">' +
      escapeHtml(this.name(s)) + "</a> " +
      '<span class="device-state">' + escapeHtml(look.words) + "</span>" + where +
      ' <span class="device-seen">' + escapeHtml(this.t("last_seen")) + " " +
      escapeHtml(this.when(s.last_seen)) + "</span>";
    // keep the list worst first, then by name
    var rank = STATES.indexOf(look.state);
    item.setAttribute("data-rank", String(rank));
    var before = null;
    var others = list.querySelectorAll("li[data-device]");
    for (var j = 0; j < others.length; j++) {
      var other = others[j];
      if (other === item) continue;
      var r = parseInt(other.getAttribute("data-rank") || "9", 10);
      if (r > rank || (r === rank && other.getAttribute("data-device") > s.device)) {
        before = other;
        break;
      }
    }
    list.insertBefore(item, before);
  };

  Console.prototype.drawLegend = function () {
    var legend = document.getElementById("legend");
    if (!legend) return;
    var self = this;
    var rows = [];
    STATES.forEach(function (state) {
      if (state === "unknown") return;
      rows.push({ state: state, stage: 0, glyph: GLYPHS[state], badge: "",
        classes: "marker-icon state-" + state, words: self.t("state_" + state) });
    });
    STAGE_RANKS.forEach(function (rank) {
      var state = rank >= 3 ? "alarm" : "warning";
      rows.push({ state: state, stage: rank, glyph: GLYPHS.water, badge: String(rank),
        classes: "marker-icon state-" + state + " stage-" + rank,
        words: self.t("cap_water") + ": " + self.t("rank_" + rank) });
    });
    legend.innerHTML = rows.map(function (row) {
      return '<li data-state="' + row.state + '" data-stage="' + row.stage + '">' +
        '<span class="' + row.classes + ' marker-inline" aria-hidden="true">' +
        self.iconHtml(row) + "</span> " + escapeHtml(row.words) + "</li>";
    }).join("");
  };

  /* The first view: every placed device, at once.  Never animated (Leaflet animates
     a zoom of up to four steps from the page's default view): the markers must not
     move after the map says it is loaded, or a tap in that moment lands on the bare
     map instead of the marker under the finger. */
  Console.prototype.fit = function () {
    var points = [];
    this.markers.forEach(function (marker) { points.push(marker.getLatLng()); });
    if (points.length === 1) {
      this.map.setView(points[0], FIT_MAX_ZOOM, { animate: false });
    } else if (points.length > 1) {
      this.map.fitBounds(L.latLngBounds(points),
        { padding: [30, 30], maxZoom: FIT_MAX_ZOOM, animate: false });
    }
  };

  function getJson(url) {
    return fetch(url, {
      credentials: "same-origin", headers: { Accept: "application/json" }
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    });
  }

  Console.prototype.load = function () {
    var self = this;
    return getJson(this.root.dataset.api || "/api/map").then(function (body) {
      if (body.tiles && body.tiles.url) self.useTiles(body.tiles.url, body.tiles.credit || "");
      (body.devices || []).forEach(function (s) { self.show(s); });
      self.fit();
      self.root.setAttribute("data-loaded", "true");
    });
  };

  Console.prototype.rememberListedEvents = function () {
    var list = document.getElementById("events");
    if (!list) return;
    var items = list.querySelectorAll("li[data-id]");
    for (var i = 0; i < items.length; i++) this.seenEvents.add(items[i].getAttribute("data-id"));
  };

  /* What the live stream could not send one by one (a burst, or a reader that fell
     behind), or may have missed (a reconnection): fetch the map and the latest events
     again.  Live messages that arrive meanwhile are held and applied after, so an older
     answer never overwrites a newer message. */
  Console.prototype.reload = function () {
    var self = this;
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.buffered = [];
    var events = this.root.dataset.events;
    this.reloading = Promise.all([
      getJson(this.root.dataset.api || "/api/map"),
      events ? getJson(events) : Promise.resolve(null)
    ]).then(function (bodies) {
      var listed = new Set();
      (bodies[0].devices || []).forEach(function (s) { listed.add(s.device); });
      Array.from(self.states.keys()).forEach(function (device) {
        if (!listed.has(device)) self.forget(device);
      });
      (bodies[0].devices || []).forEach(function (s) { self.show(s); });
      if (bodies[1]) self.replaceEvents(bodies[1].events || []);
    }).catch(function () {
      self.reloadAgain = true; // try once more, a little later
    }).then(function () {
      var held = self.buffered || [];
      self.buffered = null;
      self.reloading = null;
      self.reloads += 1;
      self.root.setAttribute("data-reloads", String(self.reloads));
      held.forEach(function (apply) { apply(); });
      if (self.reloadAgain) {
        self.reloadAgain = false;
        setTimeout(function () { self.reload(); }, 1000);
      }
    });
    return this.reloading;
  };

  /* The event list as the server has it now (newest first). */
  Console.prototype.replaceEvents = function (events) {
    var list = document.getElementById("events");
    if (!list) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    this.seenEvents = new Set();
    for (var i = events.length - 1; i >= 0; i--) this.addEvent(events[i]);
  };

  /* A live message: applied now, or after the reload being fetched. */
  Console.prototype.live = function (apply) {
    if (this.buffered) this.buffered.push(apply);
    else apply();
  };

  Console.prototype.addEvent = function (e) {
    var list = document.getElementById("events");
    if (!list || !e || this.seenEvents.has(e.id)) return;
    this.seenEvents.add(e.id);
    var empty = list.querySelector("li.empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    item.setAttribute("data-testid", "event");
    item.setAttribute("data-id", e.id);
    item.setAttribute("data-kind", e.kind);
    item.setAttribute("data-severity", e.severity);
    item.setAttribute("data-device", e.device);
    item.className = "event severity-" + (["alarm", "warning", "info"].indexOf(e.severity) >= 0 ? e.severity : "info");
    item.innerHTML = '<time datetime="' + escapeHtml(e.ts) + '">' + escapeHtml(this.when(e.received_at)) +
      "</time> " + '<span class="event-severity">' + escapeHtml(this.t("sev_" + e.severity)) + "</span> " +
      '<a href="' + escapeHtml(this.deviceUrl + encodeURIComponent(e.device)) + '">' + escapeHtml(e.device) +
      "</a> " + '<span class="event-summary">' + escapeHtml(e.summary || e.kind) + "</span>";
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
  };

  Console.prototype.setLive = function (on) {
    var status = document.getElementById("live");
    this.root.setAttribute("data-live-state", on ? "on" : "off");
    if (!status) return;
    status.textContent = this.t(on ? "live_on" : "live_off");
    status.className = on ? "live live-on" : "live live-off";
  };

  /* EventSource reconnects by itself after a dropped connection; when the server
     refused the stream (closed state), try again later, waiting longer each time. */
  Console.prototype.listen = function () {
    var url = this.root.dataset.live;
    if (!url || typeof EventSource === "undefined") return;
    var self = this;
    var delay = 2000;
    function open() {
      var source = new EventSource(url, { withCredentials: true });
      self.source = source;
      source.onopen = function () {
        delay = 2000;
        self.setLive(true);
        // after a dropped or refused stream, what was missed meanwhile is fetched again
        if (self.opened) self.reload();
        self.opened = true;
      };
      source.onerror = function () {
        self.setLive(false);
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(open, delay);
          delay = Math.min(delay * 2, 60000);
        }
      };
      source.addEventListener("state", function (message) {
        var s;
        try { s = JSON.parse(message.data); } catch (e) { return; /* a malformed line */ }
        self.live(function () { self.show(s); });
      });
      source.addEventListener("event", function (message) {
        var e;
        try { e = JSON.parse(message.data); } catch (err) { return; /* a malformed line */ }
        self.live(function () { self.addEvent(e); });
      });
      source.addEventListener("reload", function () { self.reload(); });
    }
    open();
  };

  function start() {
    var root = document.getElementById("map");
    if (!root || typeof L === "undefined") return;
    var consoleMap = new Console(root);
    window.satoyamaConsole = consoleMap;
    consoleMap.load().catch(function () {
      root.setAttribute("data-loaded", "error");
    }).then(function () {
      consoleMap.listen();
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
