/*
 * <tidings-inbox>: the Tidings in-app inbox as a web component.
 *
 *   <script src="https://tidings.example.com/widget/tidings-inbox.js" defer></script>
 *   <tidings-inbox token="USER_TOKEN" theme="auto"></tidings-inbox>
 *
 * Attributes: token (the end user's token), api (the Tidings base URL; same origin when
 * left out), theme (light | dark | auto), page-size (items per page, 1-100), lang.
 * Events (on the element): tidings-open (cancelable; detail.item), tidings-counts
 * (detail.counts), tidings-connection (detail.state), tidings-unauthorized and
 * tidings-error (detail: status, code, message, field of what failed, for the page's
 * developer; the user is shown a neutral note, never the server's wording).
 * Property: tokenProvider, a function returning a fresh user token (or a promise of
 * one); when the token expires or is refused, the widget asks it once and carries on
 * with the new token. Without it, the widget stops and fires tidings-unauthorized; the
 * page then sets a new token attribute.
 * Every text from the server is set with textContent, never parsed as HTML.
 * The live stream resumes: reconnecting, the widget sends the id of the last event it
 * got, and the server sends what was published meanwhile (or resync, then the widget
 * loads its first page again).
 */
(() => {
  "use strict";

  if (typeof window === "undefined" || window.customElements.get("tidings-inbox")) {
    return;
  }

  const BACKOFF_FIRST_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const CLOCK_TICK_MS = 60000;
  const VIEWPORT_MARGIN_PX = 8;
  const UNAVAILABLE = "Notifications are unavailable right now.";

  const STYLE = `
    :host {
      --_accent: var(--tidings-accent, #2f54eb);
      --_bg: var(--tidings-bg, #ffffff);
      --_fg: var(--tidings-fg, #1f2328);
      --_muted: var(--tidings-muted, #59636e);
      --_border: var(--tidings-border, #d1d9e0);
      --_unread-bg: var(--tidings-unread-bg, #eef2ff);
      --_hover-bg: var(--tidings-hover-bg, #f6f8fa);
      --_badge-bg: var(--tidings-badge-bg, #d1242f);
      --_badge-fg: var(--tidings-badge-fg, #ffffff);
      --_shadow: var(--tidings-shadow, 0 8px 24px rgba(31, 35, 40, 0.16));
      --_font: var(--tidings-font, system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif);
      --_radius: var(--tidings-radius, 10px);
      --_width: var(--tidings-panel-width, 380px);
      --_height: var(--tidings-panel-height, 480px);
      display: inline-block;
      position: relative;
      font-family: var(--_font);
      font-size: 14px;
      line-height: 1.4;
      color: var(--_fg);
    }
    :host([theme="dark"]) {
      --_accent: var(--tidings-accent, #6c8cff);
      --_bg: var(--tidings-bg, #1b1e24);
      --_fg: var(--tidings-fg, #e6edf3);
      --_muted: var(--tidings-muted, #9198a1);
      --_border: var(--tidings-border, #3d444d);
      --_unread-bg: var(--tidings-unread-bg, #232a3d);
      --_hover-bg: var(--tidings-hover-bg, #262c36);
      --_shadow: var(--tidings-shadow, 0 8px 24px rgba(0, 0, 0, 0.5));
    }
    @media (prefers-color-scheme: dark) {
      :host([theme="auto"]) {
        --_accent: var(--tidings-accent, #6c8cff);
        --_bg: var(--tidings-bg, #1b1e24);
        --_fg: var(--tidings-fg, #e6edf3);
        --_muted: var(--tidings-muted, #9198a1);
        --_border: var(--tidings-border, #3d444d);
        --_unread-bg: var(--tidings-unread-bg, #232a3d);
        --_hover-bg: var(--tidings-hover-bg, #262c36);
        --_shadow: var(--tidings-shadow, 0 8px 24px rgba(0, 0, 0, 0.5));
      }
    }
    [hidden] { display: none !important; }
    button { font: inherit; color: inherit; cursor: pointer; }
    :focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }
    .bell {
      position: relative; display: grid; place-items: center;
      width: 40px; height: 40px; padding: 0; border: 0; border-radius: 50%;
      background: transparent; color: var(--tidings-bell-color, currentColor);
    }
    .bell:hover { background: var(--_hover-bg); }
    .bell svg { width: 22px; height: 22px; }
    .badge {
      position: absolute; top: 2px; right: 0; min-width: 18px; height: 18px;
      padding: 0 5px; box-sizing: border-box; border-radius: 9px;
      background: var(--_badge-bg); color: var(--_badge-fg);
      font-size: 11px; font-weight: 600; line-height: 18px; text-align: center;
    }
    .panel {
      position: absolute; z-index: 1000; top: calc(100% + 6px); right: 0;
      display: flex; flex-direction: column;
      width: var(--_width); max-width: calc(100vw - 16px); height: var(--_height);
      box-sizing: border-box; background: var(--_bg); color: var(--_fg);
      border: 1px solid var(--_border); border-radius: var(--_radius); box-shadow: var(--_shadow);
      overflow: hidden;
    }
    :host([align="left"]) .panel { right: auto; left: 0; }
    header {
      display: flex; align-items: center; gap: 8px; padding: 10px 12px;
      border-bottom: 1px solid var(--_border);
    }
    header h2 { flex: 1; margin: 0; font-size: 15px; font-weight: 600; }
    .status { width: 8px; height: 8px; border-radius: 50%; background: var(--_muted); }
    .status[data-state="open"] { background: #1a7f37; }
    .status[data-state="reconnecting"] { background: #bf8700; }
    .link {
      border: 0; background: none; padding: 4px 6px; border-radius: 6px;
      color: var(--_accent); font-size: 13px;
    }
    .link:hover { background: var(--_hover-bg); }
    .link:disabled { color: var(--_muted); cursor: default; background: none; }
    .panel:focus { outline: none; }
    .scroller { flex: 1; overflow-y: auto; overscroll-behavior: contain; }
    ul { list-style: none; margin: 0; padding: 0; }
    li { border-bottom: 1px solid var(--_border); }
    .item {
      position: relative; display: grid; grid-template-columns: 10px 1fr auto; gap: 4px 8px;
      padding: 10px 12px; cursor: pointer;
    }
    .item:hover { background: var(--_hover-bg); }
    .item.unread { background: var(--_unread-bg); }
    .dot { width: 8px; height: 8px; margin-top: 6px; border-radius: 50%; }
    .unread .dot { background: var(--_accent); }
    .content { min-width: 0; }
    .title { margin: 0; font-weight: 500; overflow-wrap: anywhere; }
    .unread .title { font-weight: 650; }
    .body {
      margin: 2px 0 0; color: var(--_muted); overflow-wrap: anywhere;
      display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden;
    }
    .meta { margin-top: 4px; color: var(--_muted); font-size: 12px; }
    .group::before { content: " · "; }
    .actions { display: flex; flex-direction: column; gap: 2px; opacity: 0.75; }
    .item:hover .actions, .item:focus-within .actions { opacity: 1; }
    .action {
      width: 28px; height: 28px; padding: 0; border: 0; border-radius: 6px;
      background: transparent; color: var(--_muted); display: grid; place-items: center;
    }
    .action:hover { background: var(--_border); color: var(--_fg); }
    .action svg { width: 16px; height: 16px; }
    .note { padding: 24px 12px; text-align: center; color: var(--_muted); }
    .error { color: var(--_badge-bg); }
    .sentinel { height: 1px; }
  `;

  const ICONS = {
    bell:
      '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
      'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">' +
      '<path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/>' +
      '<path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/></svg>',
    read:
      '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
      'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">' +
      '<path d="M20 6 9 17l-5-5"/></svg>',
    unread:
      '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true">' +
      '<circle cx="12" cy="12" r="5"/></svg>',
    archive:
      '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
      'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">' +
      '<rect x="2" y="3" width="20" height="5" rx="1"/>' +
      '<path d="M4 8v11a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8"/><path d="M10 12h4"/></svg>',
  };

  // The widget's own markup: constant, no server data in it.
  const TEMPLATE = `
    <style>${STYLE}</style>
    <button class="bell" part="bell" type="button" aria-haspopup="dialog" aria-expanded="false"
            aria-controls="panel">${ICONS.bell}<span class="badge" part="badge" hidden></span></button>
    <section class="panel" id="panel" part="panel" role="dialog" aria-label="Notifications"
             tabindex="-1" hidden>
      <header>
        <h2>Notifications</h2>
        <span class="status" part="status" data-state="connecting" role="img"></span>
        <button class="link mark-all" type="button">Mark all as read</button>
      </header>
      <div class="scroller" part="list">
        <ul aria-label="Notifications"></ul>
        <p class="note empty" hidden>You have no notifications.</p>
        <p class="note error" role="alert" hidden></p>
        <p class="note loading" hidden>Loading…</p>
        <p class="note end" hidden>That is everything.</p>
        <div class="sentinel" aria-hidden="true"></div>
      </div>
    </section>
  `;

  class HttpError extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(typeof error.message === "string" ? error.message : `HTTP ${status}`);
      this.status = status;
      this.code = typeof error.code === "string" ? error.code : null;
      this.field = typeof error.field === "string" ? error.field : null;
    }
  }

  /** What an event tells the page's developer about a failure: never shown to users. */
  function errorDetail(error) {
    return {
      status: (error && error.status) || 0,
      code: (error && error.code) || null,
      message: (error && error.message) || String(error),
      field: (error && error.field) || null,
    };
  }

  /** "Ann", "Ann and Cid", "Ann and 3 others", "Ann (4 times)": who a collapsed item holds. */
  function groupLine(group) {
    if (!group || group.count < 2) return "";
    const names = (group.actors || [])
      .map((actor) => (actor && typeof actor.name === "string" && actor.name) || null)
      .filter(Boolean);
    if (names.length === 0) return `${group.count} updates`;
    if (names.length === 1) return `${names[0]} (${group.count} times)`;
    if (names.length === 2) return `${names[0]} and ${names[1]}`;
    return `${names[0]} and ${names.length - 1} others`;
  }

  /** A link an item may open: http(s) only, resolved against the page. */
  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, document.baseURI);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  class TidingsInbox extends HTMLElement {
    static get observedAttributes() {
      return ["token", "api", "page-size"];
    }

    constructor() {
      super();
      this._root = this.attachShadow({ mode: "open" });
      this._root.innerHTML = TEMPLATE;
      const $ = (selector) => this._root.querySelector(selector);
      this._bell = $(".bell");
      this._badge = $(".badge");
      this._panel = $(".panel");
      this._status = $(".status");
      this._markAll = $(".mark-all");
      this._scroller = $(".scroller");
      this._list = $("ul");
      this._empty = $(".empty");
      this._error = $(".error");
      this._loading = $(".loading");
      this._end = $(".end");
      this._sentinel = $(".sentinel");

      this._items = new Map(); // id -> {item, li}
      this._cursor = null;
      this._exhausted = false;
      this._loadingPage = null;
      this._generation = 0;
      this._counts = { unread: 0, unseen: 0, total: 0 };
      this._source = null;
      this._lastEventId = "";
      this._listVersion = 0;
      this._reconnectTimer = null;
      this._backoff = BACKOFF_FIRST_MS;
      this._connectionState = "closed";
      this._started = false;
      this._tokenProvider = null;
      this._renewing = false;
      this._freshToken = false;

      this._bell.addEventListener("click", () => this.toggle());
      this._markAll.addEventListener("click", () => this.markAllRead());
      this._panel.addEventListener("keydown", (event) => this._onPanelKey(event));
      this._onDocumentClick = (event) => {
        if (this.open && !event.composedPath().includes(this)) this.close();
      };
      this._onOnline = () => {
        if (this._reconnectTimer !== null) this._reconnectNow();
      };
      this._onResize = () => {
        if (this.open) this._place();
      };
      this._observer = new IntersectionObserver(
        (entries) => {
          // An entry may be stale by the time it is delivered: measure again.
          if (entries.some((entry) => entry.isIntersecting)) this._fillIfVisible();
        },
        { root: this._scroller, rootMargin: "0px 0px 120px 0px" },
      );
    }

    connectedCallback() {
      if (!this.hasAttribute("theme")) this.setAttribute("theme", "light");
      document.addEventListener("click", this._onDocumentClick);
      window.addEventListener("online", this._onOnline);
      window.addEventListener("resize", this._onResize);
      this._observer.observe(this._sentinel);
      this._clock = window.setInterval(() => this._refreshTimes(), CLOCK_TICK_MS);
      this._started = true;
      this._restart();
    }

    disconnectedCallback() {
      document.removeEventListener("click", this._onDocumentClick);
      window.removeEventListener("online", this._onOnline);
      window.removeEventListener("resize", this._onResize);
      this._observer.disconnect();
      window.clearInterval(this._clock);
      this._started = false;
      this._disconnect();
      this._generation += 1;
    }

    attributeChangedCallback(_name, before, after) {
      if (before !== after && this._started) this._restart();
    }

    /** Whether the panel is open. */
    get open() {
      return !this._panel.hidden;
    }

    /** "connecting", "open", "reconnecting", "unauthorized" or "closed". */
    get connectionState() {
      return this._connectionState;
    }

    /** A function returning a fresh user token (or a promise of one), or null. */
    get tokenProvider() {
      return this._tokenProvider;
    }

    set tokenProvider(provider) {
      this._tokenProvider = typeof provider === "function" ? provider : null;
    }

    /** The latest counts: {unread, unseen, total}. */
    get counts() {
      return { ...this._counts };
    }

    toggle() {
      if (this.open) this.close();
      else this.show();
    }

    show() {
      if (this.open) return;
      this._panel.hidden = false;
      this._place();
      this._bell.setAttribute("aria-expanded", "true");
      // Items pushed live may be shown already; the first page is still to be fetched.
      if (this._cursor === null && !this._exhausted) this._loadMore();
      this._markShownSeen();
      const first = this._list.querySelector(".item");
      (first || this._panel).focus({ preventScroll: true });
    }

    close() {
      if (!this.open) return;
      const hadFocus = this._root.activeElement !== null;
      this._panel.hidden = true;
      this._bell.setAttribute("aria-expanded", "false");
      if (hadFocus) this._bell.focus();
    }

    async markAllRead() {
      try {
        const marked = await this._request("POST", "/v1/me/inbox/mark", { read: true });
        for (const entry of this._items.values()) {
          entry.item.read = true;
          this._paint(entry);
        }
        this._setCounts(marked.counts);
      } catch (error) {
        this._showError(error);
      }
    }

    // --- state --------------------------------------------------------------------------

    get _base() {
      return (this.getAttribute("api") || "").replace(/\/+$/, "");
    }

    get _token() {
      return this.getAttribute("token") || "";
    }

    get _pageSize() {
      const size = parseInt(this.getAttribute("page-size") || "20", 10);
      return Number.isFinite(size) ? Math.min(100, Math.max(1, size)) : 20;
    }

    _restart() {
      this._freshToken = false;
      this._disconnect();
      this._generation += 1;
      this._lastEventId = "";
      this._clearList();
      this._error.hidden = true;
      this._setCounts({ unread: 0, unseen: 0, total: 0 });
      this._renderNotes();
      if (!this._token) {
        this._setConnection("closed");
        return;
      }
      this._backoff = BACKOFF_FIRST_MS;
      this._setConnection("connecting");
      this._connect();
      if (this.open) this._loadMore();
    }

    async _request(method, path, body, options = {}) {
      const headers = { Authorization: `Bearer ${this._token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(this._base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        keepalive: Boolean(options.keepalive),
      });
      const payload = await response.json().catch(() => null);
      if (!response.ok) {
        const error = new HttpError(response.status, payload);
        if (response.status === 401) this._unauthorized(errorDetail(error));
        throw error;
      }
      return payload;
    }

    _unauthorized(detail) {
      this._disconnect();
      // A token the provider has just given that is refused too is not asked again:
      // asking in a loop would hammer both servers.
      if (this._tokenProvider && !this._renewing && !this._freshToken) {
        this._renew(this._generation, detail);
        return;
      }
      this._refused(detail);
    }

    _refused(detail) {
      // Told once per refusal, however many requests were refused with it.
      if (this._connectionState === "unauthorized") return;
      this._setConnection("unauthorized");
      this.dispatchEvent(
        new CustomEvent("tidings-unauthorized", {
          bubbles: true,
          composed: true,
          detail: detail || { status: 401, code: "unauthenticated", message: "", field: null },
        }),
      );
    }

    async _renew(generation, detail) {
      this._renewing = true;
      this._setConnection("reconnecting");
      let token = "";
      try {
        token = await this._tokenProvider();
      } catch {
        token = "";
      }
      this._renewing = false;
      if (generation !== this._generation) return;
      if (typeof token === "string" && token && token !== this._token) {
        this.setAttribute("token", token);
        this._freshToken = true;
        return;
      }
      this._refused(detail);
    }

    // --- the live stream, reconnected with exponential backoff --------------------------

    _connect() {
      const generation = this._generation;
      const params = new URLSearchParams({ token: this._token });
      // A new EventSource does not send the Last-Event-ID of the one before: the id
      // goes in the query, and the server sends what this widget missed meanwhile.
      const resuming = Boolean(this._lastEventId);
      if (resuming) params.set("last_event_id", this._lastEventId);
      const source = new EventSource(`${this._base}/v1/me/inbox/stream?${params}`);
      this._source = source;
      source.addEventListener("open", () => {
        if (generation !== this._generation) return;
        const recovered = this._connectionState === "reconnecting";
        this._backoff = BACKOFF_FIRST_MS;
        this._freshToken = false;
        this._setConnection("open");
        // A stream that cannot resume (no event came before it dropped): whatever
        // arrived meanwhile is on the first page.
        if (recovered && !resuming) this._reloadFirstPage();
      });
      source.addEventListener("counts", (event) => this._onMessage(generation, event, "counts"));
      source.addEventListener("item", (event) => this._onMessage(generation, event, "item"));
      // Too much was missed to send it all: start the list again from the first page.
      source.addEventListener("resync", (event) => {
        if (generation !== this._generation) return;
        this._lastEventId = event.lastEventId || this._lastEventId;
        this._reloadFirstPage();
      });
      // The token stopped being accepted: the same one would only be refused again.
      source.addEventListener("expired", () => {
        if (generation === this._generation) {
          this._unauthorized({
            status: 401,
            code: "token_expired",
            message: "The user token has expired.",
            field: "token",
          });
        }
      });
      // A newer stream of the same user took this one's place (too many were open):
      // reconnecting would push out another one, so this one stays closed.
      source.addEventListener("closed", () => {
        if (generation !== this._generation) return;
        this._disconnect();
        this._setConnection("closed");
      });
      source.addEventListener("error", () => {
        if (generation !== this._generation) return;
        // The browser's own retry gives up on some failures and never backs off; take over.
        source.close();
        this._source = null;
        this._scheduleReconnect(generation);
      });
    }

    _scheduleReconnect(generation) {
      this._setConnection("reconnecting");
      const delay = this._backoff * (0.75 + Math.random() * 0.5);
      this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
      this._reconnectTimer = window.setTimeout(() => {
        this._reconnectTimer = null;
        if (generation === this._generation) this._probeThenConnect(generation);
      }, delay);
    }

    _reconnectNow() {
      window.clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
      this._probeThenConnect(this._generation);
    }

    async _probeThenConnect(generation) {
      // EventSource hides the status of a failed connection: ask once over fetch, so an
      // expired token stops the retries instead of hammering the server.
      try {
        const counts = await this._request("GET", "/v1/me/inbox/counts");
        if (generation !== this._generation) return;
        this._setCounts(counts);
      } catch (error) {
        if (generation !== this._generation || (error && error.status === 401)) return;
        this._scheduleReconnect(generation);
        return;
      }
      this._connect();
    }

    _disconnect() {
      if (this._source) this._source.close();
      this._source = null;
      window.clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }

    _setConnection(state) {
      if (state === this._connectionState) return;
      this._connectionState = state;
      this._status.dataset.state = state;
      this._status.setAttribute("aria-label", `Live updates: ${state}`);
      this.dispatchEvent(new CustomEvent("tidings-connection", { detail: { state } }));
    }

    _onMessage(generation, event, kind) {
      if (generation !== this._generation) return;
      if (event.lastEventId) this._lastEventId = event.lastEventId;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (kind === "counts") {
        this._setCounts(data);
      } else {
        this._upsert(data, { top: true });
        if (this.open) this._markShownSeen();
      }
    }

    // --- the list -----------------------------------------------------------------------

    async _loadMore() {
      if (!this._token || this._exhausted || this._loadingPage || !this.open) return;
      const generation = this._generation;
      const version = this._listVersion;
      const params = new URLSearchParams({ limit: String(this._pageSize) });
      if (this._cursor) params.set("cursor", this._cursor);
      const loading = this._request("GET", `/v1/me/inbox?${params}`);
      this._loadingPage = loading;
      this._renderNotes();
      try {
        const page = await loading;
        // The list started over meanwhile: this page continues a list that is gone.
        if (generation !== this._generation || version !== this._listVersion) return;
        for (const item of page.items) this._upsert(item, { top: false });
        this._cursor = page.next_cursor;
        this._exhausted = !page.next_cursor;
        this._error.hidden = true;
        this._markShownSeen();
      } catch (error) {
        if (generation === this._generation) this._showError(error);
      } finally {
        if (generation === this._generation && this._loadingPage === loading) {
          this._loadingPage = null;
          this._renderNotes();
          // A short page may leave the end of the list in view: keep filling.
          if (!this._exhausted && this._error.hidden) this._fillIfVisible();
        }
      }
    }

    _fillIfVisible() {
      const box = this._scroller.getBoundingClientRect();
      const end = this._sentinel.getBoundingClientRect();
      if (this.open && end.top <= box.bottom + 120) this._loadMore();
    }

    /** The list as the server has it now: its first page, the rest as one scrolls. */
    async _reloadFirstPage() {
      const generation = this._generation;
      const version = ++this._listVersion;
      try {
        const page = await this._request("GET", `/v1/me/inbox?limit=${this._pageSize}`);
        if (generation !== this._generation || version !== this._listVersion) return;
        // What is shown may have a gap before the first page: start the list over.
        this._clearList();
        for (const item of page.items) this._upsert(item, { top: false });
        this._cursor = page.next_cursor;
        this._exhausted = !page.next_cursor;
        this._renderNotes();
        this._markShownSeen();
        if (!this._exhausted) this._fillIfVisible();
      } catch (error) {
        if (generation === this._generation && this.open) this._showError(error);
      }
    }

    _clearList() {
      this._listVersion += 1;
      this._items.clear();
      this._list.replaceChildren();
      this._cursor = null;
      this._exhausted = false;
      this._loadingPage = null;
      this._renderNotes();
    }

    _upsert(item, { top }) {
      if (!item || typeof item.id !== "string") return;
      let entry = this._items.get(item.id);
      if (item.archived) {
        if (entry) this._remove(entry);
        return;
      }
      if (!entry) {
        entry = { item, li: this._build(item) };
        this._items.set(item.id, entry);
        if (top) this._list.prepend(entry.li);
        else this._list.append(entry.li);
      } else {
        entry.item = item;
        if (top) this._list.prepend(entry.li);
      }
      this._paint(entry);
      this._renderNotes();
    }

    _remove(entry) {
      const next = entry.li.nextElementSibling || entry.li.previousElementSibling;
      const hadFocus = entry.li.contains(this._root.activeElement);
      entry.li.remove();
      this._items.delete(entry.item.id);
      if (hadFocus) (next ? next.querySelector(".item") : this._panel).focus();
      this._renderNotes();
    }

    _build(item) {
      const li = document.createElement("li");
      const row = document.createElement("article");
      row.className = "item";
      row.tabIndex = 0;
      row.dataset.id = item.id;
      const dot = document.createElement("span");
      dot.className = "dot";
      const content = document.createElement("div");
      content.className = "content";
      const title = document.createElement("p");
      title.className = "title";
      const body = document.createElement("p");
      body.className = "body";
      const meta = document.createElement("div");
      meta.className = "meta";
      const group = document.createElement("span");
      group.className = "group";
      const time = document.createElement("time");
      meta.append(time, group);
      content.append(title, body, meta);
      const actions = document.createElement("div");
      actions.className = "actions";
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "action toggle-read";
      const archive = document.createElement("button");
      archive.type = "button";
      archive.className = "action archive";
      archive.innerHTML = ICONS.archive; // constant markup
      archive.setAttribute("aria-label", "Archive");
      archive.title = "Archive";
      actions.append(toggle, archive);
      row.append(dot, content, actions);
      li.append(row);

      row.addEventListener("click", () => this._openItem(item.id));
      row.addEventListener("keydown", (event) => {
        if (event.target === row && (event.key === "Enter" || event.key === " ")) {
          event.preventDefault();
          this._openItem(item.id);
        }
      });
      toggle.addEventListener("click", (event) => {
        event.stopPropagation();
        const entry = this._items.get(item.id);
        if (entry) this._mark(entry, { read: !entry.item.read });
      });
      archive.addEventListener("click", (event) => {
        event.stopPropagation();
        const entry = this._items.get(item.id);
        if (entry) this._mark(entry, { archived: true });
      });
      return li;
    }

    _paint(entry) {
      const { item, li } = entry;
      const row = li.firstElementChild;
      row.classList.toggle("unread", !item.read);
      row.querySelector(".title").textContent = item.title || "";
      const body = row.querySelector(".body");
      body.textContent = item.body || "";
      body.hidden = !item.body;
      const group = row.querySelector(".group");
      group.textContent = groupLine(item.group);
      group.hidden = !group.textContent;
      const time = row.querySelector("time");
      time.dateTime = item.created_at;
      time.title = new Date(item.created_at).toLocaleString(this._lang);
      time.textContent = this._relative(item.created_at);
      const toggle = row.querySelector(".toggle-read");
      const label = item.read ? "Mark as unread" : "Mark as read";
      if (toggle.getAttribute("aria-label") !== label) {
        toggle.innerHTML = item.read ? ICONS.unread : ICONS.read; // constant markup
      }
      toggle.setAttribute("aria-label", label);
      toggle.title = label;
      row.setAttribute("aria-label", `${item.read ? "" : "Unread: "}${item.title || ""}`);
    }

    async _openItem(id) {
      const entry = this._items.get(id);
      if (!entry) return;
      const url = safeUrl(entry.item.action_url);
      const proceed = this.dispatchEvent(
        new CustomEvent("tidings-open", {
          bubbles: true,
          composed: true,
          cancelable: true,
          detail: { item: { ...entry.item }, url },
        }),
      );
      const marking = entry.item.read
        ? Promise.resolve()
        : this._mark(entry, { read: true }, { keepalive: Boolean(proceed && url) });
      if (proceed && url) {
        await marking;
        window.location.assign(url);
      }
    }

    _mark(entry, marks, options = {}) {
      const before = { ...entry.item };
      Object.assign(entry.item, marks);
      if (marks.archived) this._remove(entry);
      else this._paint(entry);
      // One item's changes go out one after the other, so the last click wins.
      entry.queued = (entry.queued || 0) + 1;
      const send = () => this._send(entry, marks, options, before);
      entry.pending = (entry.pending || Promise.resolve()).then(send, send);
      return entry.pending;
    }

    async _send(entry, marks, options, before) {
      try {
        const item = await this._request(
          "PATCH",
          `/v1/me/inbox/${encodeURIComponent(entry.item.id)}`,
          marks,
          options,
        );
        entry.queued -= 1;
        if (!entry.queued && !marks.archived && this._items.get(item.id) === entry) {
          entry.item = item;
          this._paint(entry);
        }
      } catch (error) {
        entry.queued -= 1;
        entry.item = before;
        if (marks.archived && !this._items.has(before.id)) {
          this._upsert(before, { top: false });
        } else {
          this._paint(entry);
        }
        this._showError(error);
      }
    }

    _markShownSeen() {
      if (!this.open) return;
      const ids = [];
      for (const { item } of this._items.values()) {
        if (!item.seen) {
          item.seen = true;
          ids.push(item.id);
        }
      }
      if (ids.length) {
        this._request("POST", "/v1/me/inbox/mark", { ids, seen: true }).catch(() => {});
      }
    }

    _onPanelKey(event) {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close();
        return;
      }
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      const rows = [...this._list.querySelectorAll(".item")];
      if (!rows.length) return;
      event.preventDefault();
      const current = rows.findIndex((row) => row.contains(this._root.activeElement));
      const step = event.key === "ArrowDown" ? 1 : -1;
      const next = current < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, current + step));
      rows[next].focus();
    }

    // --- painting -----------------------------------------------------------------------

    _setCounts(counts) {
      if (!counts || typeof counts.unread !== "number") return;
      this._counts = { unread: counts.unread, unseen: counts.unseen, total: counts.total };
      const unread = counts.unread;
      this._badge.textContent = unread > 99 ? "99+" : String(unread);
      this._badge.hidden = unread === 0;
      this._bell.setAttribute(
        "aria-label",
        unread ? `Notifications, ${unread} unread` : "Notifications",
      );
      this._markAll.disabled = unread === 0;
      this.dispatchEvent(new CustomEvent("tidings-counts", { detail: { counts: this.counts } }));
    }

    _renderNotes() {
      const loading = Boolean(this._loadingPage);
      this._loading.hidden = !loading;
      this._empty.hidden = loading || this._items.size > 0 || !this._exhausted;
      this._end.hidden = loading || this._items.size === 0 || !this._exhausted;
    }

    /** A neutral note for the user; the details go to the page in tidings-error. */
    _showError(error) {
      this._error.textContent = UNAVAILABLE;
      this._error.hidden = false;
      this.dispatchEvent(
        new CustomEvent("tidings-error", {
          bubbles: true,
          composed: true,
          detail: errorDetail(error),
        }),
      );
    }

    /** Keep the open panel inside the viewport: on a narrow screen, anchored to the
     * bell it would stick out past an edge. */
    _place() {
      this._panel.style.transform = "";
      const box = this._panel.getBoundingClientRect();
      const width = document.documentElement.clientWidth || window.innerWidth;
      const tooFarLeft = VIEWPORT_MARGIN_PX - box.left;
      const tooFarRight = box.right - (width - VIEWPORT_MARGIN_PX);
      let shift = 0;
      if (tooFarLeft > 0) shift = tooFarLeft;
      else if (tooFarRight > 0) shift = -Math.min(tooFarRight, box.left - VIEWPORT_MARGIN_PX);
      if (shift) this._panel.style.transform = `translateX(${shift}px)`;
    }

    get _lang() {
      return this.getAttribute("lang") || document.documentElement.lang || undefined;
    }

    _relative(iso) {
      const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
      if (!Number.isFinite(seconds)) return "";
      const format = new Intl.RelativeTimeFormat(this._lang, { numeric: "auto" });
      const abs = Math.abs(seconds);
      if (abs < 45) return format.format(0, "second");
      if (abs < 3600) return format.format(Math.round(seconds / 60), "minute");
      if (abs < 86400) return format.format(Math.round(seconds / 3600), "hour");
      if (abs < 86400 * 7) return format.format(Math.round(seconds / 86400), "day");
      return new Date(iso).toLocaleDateString(this._lang, { month: "short", day: "numeric" });
    }

    _refreshTimes() {
      for (const entry of this._items.values()) {
        entry.li.querySelector("time").textContent = this._relative(entry.item.created_at);
      }
    }
  }

  window.customElements.define("tidings-inbox", TidingsInbox);
})();
