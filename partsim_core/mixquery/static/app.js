// MixQuery page logic (thesis ch. 6, Fig. 6.2): song list (1), the chosen song's parts per 10-s segment (2),
// the query set (3) and the ranked results (4). Plain JavaScript, no build step; it talks only to the JSON API of
// partsim_core/retrieval/app.py. Names from the index are always inserted as text, never as HTML.
"use strict";

(() => {
  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
  const state = {
    songs: [],
    parts: [],
    maxQuerySet: 16,
    k: 100,
    song: null, // the song shown in area 2
    queries: [], // [{song, part, segment, start, end}]
    searchSeq: 0, // only the answer to the latest search is shown
    songSeq: 0,
    similarSeq: 0,
  };

  /** Create an element; attrs: text, class, dataset, on<event>, or plain attributes. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  /** GET (no body) or POST JSON; throws Error(message from the server) on a non-2xx answer. */
  async function api(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
    return data;
  }

  function setStatus(text, isError = false) {
    const status = byTestId("status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function clock(seconds) {
    if (seconds === null || seconds === undefined) return "?";
    const whole = Math.round(seconds);
    return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
  }
  const span = (start, end) => `${clock(start)}\u2013${clock(end)}`;
  const distance = (value) => (value === null || value === undefined ? "n/a" : value.toFixed(4));
  const queryKey = (q) => JSON.stringify([q.song, q.part, q.segment]);
  const mixUrl = (song, segment) => `/audio/${encodeURIComponent(song)}/mix/${segment}.wav`;

  // ---- (1) song list -------------------------------------------------------------------------------------------

  function renderSongList() {
    const list = byTestId("song-list");
    list.replaceChildren(...state.songs.map((song) => el("li", { dataset: { song } },
      el("button", { type: "button", class: "song", "data-testid": "song-item", dataset: { song },
                     onclick: () => openSong(song) }, song))));
    applyFilter();
  }

  function applyFilter() {
    const needle = byTestId("song-filter").value.trim().toLowerCase();
    let shown = 0;
    for (const item of byTestId("song-list").children) {
      const match = !needle || item.dataset.song.toLowerCase().includes(needle);
      item.hidden = !match;
      shown += match ? 1 : 0;
    }
    byTestId("song-count").textContent = needle ? `${shown} of ${state.songs.length} songs`
      : `${state.songs.length} songs`;
  }

  function markChosenSong() {
    for (const button of byTestId("song-list").querySelectorAll("button.song")) {
      const chosen = button.dataset.song === state.song;
      button.classList.toggle("chosen", chosen);
      if (chosen) button.setAttribute("aria-current", "true"); else button.removeAttribute("aria-current");
    }
  }

  // ---- (2) the chosen song's parts -----------------------------------------------------------------------------

  async function openSong(song) {
    const seq = ++state.songSeq;
    setStatus(`Loading ${song}\u2026`);
    let info;
    try {
      info = await api(`/api/songs/${encodeURIComponent(song)}`);
    } catch (error) {
      if (seq === state.songSeq) setStatus(`Could not load ${song}: ${error.message}`, true);
      return;
    }
    if (seq !== state.songSeq) return; // a later click won
    state.song = song;
    markChosenSong();
    byTestId("song-title").textContent = song;
    byTestId("song-hint").textContent = "Listen to each part; add the segments you like to the query set, or "
      + "find stems of other songs that sound like them.";
    const rows = [];
    const order = [...(info.mix ? ["mix"] : []), ...info.parts];
    for (const part of order) {
      const urls = info.audio[part];
      const cells = info.segments.map((seg, i) => {
        const query = { song, part, segment: seg.segment, start: seg.start, end: seg.end };
        const buttons = part === "mix" ? [] : [
          el("button", { type: "button", class: "add", "data-testid": "add-to-query",
                         dataset: { part, segment: seg.segment, key: queryKey(query) },
                         onclick: () => toggleQuery(query) }, "add to query set"),
          el("button", { type: "button", class: "secondary", "data-testid": "find-similar",
                         dataset: { part, segment: seg.segment }, onclick: () => findSimilar(query) },
             "find similar"),
        ];
        return el("div", { class: "segment", "data-testid": "segment", dataset: { part, segment: seg.segment } },
          el("span", { class: "time", text: span(seg.start, seg.end) }),
          el("audio", { controls: true, preload: "none", src: urls[i], "data-testid": "segment-audio" }),
          ...buttons);
      });
      rows.push(el("div", { class: "part-row", "data-testid": "part-row", dataset: { part } },
        el("h3", { class: "part-name", text: part === "mix" ? "mix (listen only)" : part }),
        el("div", { class: "segments" }, ...cells)));
    }
    if (!order.length) rows.push(el("p", { class: "hint", text: "This song has no audio in the index." }));
    byTestId("part-rows").replaceChildren(...rows);
    updateAddButtons();
    setStatus(`${song}: ${info.segments.length} segments, parts ${info.parts.join(", ") || "none"}`);
  }

  function updateAddButtons() {
    const chosen = new Set(state.queries.map(queryKey));
    const full = state.queries.length >= state.maxQuerySet;
    for (const button of document.querySelectorAll("button.add")) {
      const added = chosen.has(button.dataset.key);
      button.classList.toggle("added", added);
      button.setAttribute("aria-pressed", String(added));
      button.textContent = added ? "added \u2713" : "add to query set";
      button.disabled = full && !added;
    }
  }

  // ---- (3) the query set ---------------------------------------------------------------------------------------

  function toggleQuery(query) {
    const key = queryKey(query);
    if (state.queries.some((q) => queryKey(q) === key)) {
      state.queries = state.queries.filter((q) => queryKey(q) !== key);
    } else if (state.queries.length >= state.maxQuerySet) {
      setStatus(`The query set holds at most ${state.maxQuerySet} segments: remove one first.`, true);
      return;
    } else {
      state.queries = [...state.queries, query];
    }
    queriesChanged();
  }

  function removeQuery(key) {
    state.queries = state.queries.filter((q) => queryKey(q) !== key);
    queriesChanged();
  }

  function queriesChanged() {
    const list = byTestId("query-list");
    list.replaceChildren(...state.queries.map((q) => el("li", {
      class: "query", "data-testid": "query-item", dataset: { song: q.song, part: q.part, segment: q.segment },
    },
    el("span", { class: "part-badge", text: q.part }),
    el("button", { type: "button", class: "link", text: q.song, title: "show this song",
                   onclick: () => openSong(q.song) }),
    el("span", { class: "time", text: span(q.start, q.end) }),
    el("audio", { controls: true, preload: "none", src: `/audio/${encodeURIComponent(q.song)}/`
                  + `${encodeURIComponent(q.part)}/${q.segment}.wav` }),
    el("button", { type: "button", class: "remove", "data-testid": "remove-query",
                   "aria-label": `remove ${q.part} of ${q.song} ${span(q.start, q.end)}`,
                   onclick: () => removeQuery(queryKey(q)) }, "remove"))));
    const n = state.queries.length;
    const parts = [...new Set(state.queries.map((q) => q.part))];
    byTestId("query-count").textContent = n ? `${n} of at most ${state.maxQuerySet} segments; parts: `
      + parts.join(", ") : "Empty: add segments from step 2.";
    byTestId("clear-queries").disabled = n === 0;
    updateAddButtons();
    search();
  }

  // ---- (4) results ---------------------------------------------------------------------------------------------

  async function search() {
    const seq = ++state.searchSeq;
    const list = byTestId("result-list");
    if (!state.queries.length) {
      list.replaceChildren();
      list.dataset.seq = String(seq);
      byTestId("result-count").textContent = "";
      setStatus("The query set is empty.");
      return;
    }
    setStatus("Searching\u2026");
    list.classList.add("stale");
    const started = performance.now();
    let data;
    try {
      data = await api("/api/search", {
        queries: state.queries.map((q) => ({ song: q.song, part: q.part, segment: q.segment })), k: state.k,
      });
    } catch (error) {
      if (seq === state.searchSeq) {
        list.classList.remove("stale");
        setStatus(`Search failed: ${error.message}`, true);
      }
      return;
    }
    if (seq !== state.searchSeq) return; // the query set changed again meanwhile
    list.classList.remove("stale");
    list.replaceChildren(...data.results.map((r) => el("li", {
      class: "result", "data-testid": "result-item",
      dataset: { song: r.song, rank: r.rank, distance: r.distance, bestSegment: r.best_segment },
    },
    el("button", { type: "button", class: "play", "data-testid": "play-result", disabled: !r.audio,
                   "aria-label": `play ${r.song} from ${clock(r.start)}`,
                   onclick: () => playResult(r) }, "\u25B6"),
    el("button", { type: "button", class: "link", text: r.song, title: "show this song",
                   onclick: () => openSong(r.song) }),
    el("span", { class: "distance", text: `D = ${distance(r.distance)}` }),
    el("span", { class: "time", text: `best ${span(r.start, r.end)}` }))));
    list.dataset.seq = String(seq);
    const ms = Math.round(performance.now() - started);
    byTestId("result-count").textContent = `${data.results.length} songs, closest first (${ms} ms)`;
    setStatus(`${data.results.length} results for ${state.queries.length} segment(s).`);
  }

  function playResult(result) {
    const player = byTestId("result-player");
    player.dataset.song = result.song;
    player.dataset.segment = String(result.best_segment);
    player.dataset.segments = String(result.segments);
    player.src = result.audio;
    byTestId("now-playing").textContent = `${result.song} from ${clock(result.start)} (best segment)`;
    player.play().catch((error) => setStatus(`Playback failed: ${error.message}`, true));
  }

  // Keep listening: after a result's best segment, go on with the song's next segments.
  function continueResult() {
    const player = byTestId("result-player");
    const next = Number(player.dataset.segment) + 1;
    if (!player.dataset.song || !(next < Number(player.dataset.segments))) return;
    player.dataset.segment = String(next);
    player.src = mixUrl(player.dataset.song, next);
    player.play().catch(() => {});
  }

  async function findSimilar(query) {
    const seq = ++state.similarSeq;
    const box = byTestId("similar");
    box.hidden = false;
    byTestId("similar-title").textContent = `${query.part} of ${query.song} ${span(query.start, query.end)}`;
    byTestId("similar-count").textContent = "Searching\u2026";
    let data;
    try {
      data = await api("/api/similar", { song: query.song, part: query.part, segment: query.segment, k: state.k });
    } catch (error) {
      if (seq === state.similarSeq) {
        byTestId("similar-count").textContent = "";
        setStatus(`Finding similar stems failed: ${error.message}`, true);
      }
      return;
    }
    if (seq !== state.similarSeq) return;
    byTestId("similar-list").replaceChildren(...data.results.map((h) => {
      const found = { song: h.song, part: h.part, segment: h.segment, start: h.start, end: h.end };
      return el("li", { class: "similar-item", "data-testid": "similar-item",
                        dataset: { song: h.song, part: h.part, segment: h.segment, distance: h.distance } },
        el("button", { type: "button", class: "link", text: h.song, title: "show this song",
                       onclick: () => openSong(h.song) }),
        el("span", { class: "time", text: span(h.start, h.end) }),
        el("span", { class: "distance", text: `d = ${distance(h.distance)}` }),
        el("audio", { controls: true, preload: "none", src: h.audio }),
        el("button", { type: "button", class: "add", "data-testid": "add-similar",
                       dataset: { key: queryKey(found) }, onclick: () => toggleQuery(found) }, "add to query set"));
    }));
    byTestId("similar-count").textContent = `${data.results.length} ${data.part} stems, closest first`;
    updateAddButtons();
    byTestId("similar").scrollIntoView({ block: "nearest" });
  }

  // ---- start -------------------------------------------------------------------------------------------------

  async function start() {
    byTestId("song-filter").addEventListener("input", applyFilter);
    byTestId("clear-queries").addEventListener("click", () => { state.queries = []; queriesChanged(); });
    const player = byTestId("result-player");
    player.addEventListener("ended", continueResult);
    // One sound at a time: starting any player pauses the others.
    document.addEventListener("play", (event) => {
      for (const audio of document.querySelectorAll("audio")) if (audio !== event.target) audio.pause();
    }, true);
    try {
      const info = await api("/api/songs");
      state.songs = info.songs;
      state.parts = info.parts;
      state.maxQuerySet = info.max_query_set;
      state.k = info.k;
    } catch (error) {
      setStatus(`Could not load the song list: ${error.message}`, true);
      return;
    }
    renderSongList();
    document.body.dataset.ready = "true";
    setStatus(`${state.songs.length} songs; parts ${state.parts.join(", ")}. Choose a song to begin.`);
  }

  start();
})();
