// Keeps a dashboard page current without a full reload: every few seconds it reads the
// same URL again and swaps in the fresh copy of each element marked data-live (by id).
// Forms are never inside those elements, so a reason being typed is not lost.
(() => {
  "use strict";
  const every = Number(document.body.dataset.refresh || 0) * 1000;
  if (!every) return;
  let busy = false;

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(location.href, {
        credentials: "same-origin",
        headers: { "Accept": "text/html" },
        cache: "no-store",
      });
      const stamp = document.getElementById("stamp");
      if (response.redirected || response.status === 401) {
        location.reload(); // the session ended: show the login page
        return;
      }
      if (!response.ok) {
        if (stamp) stamp.classList.add("stale");
        return;
      }
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const element of document.querySelectorAll("[data-live]")) {
        const replacement = fresh.getElementById(element.id);
        if (replacement) element.replaceWith(document.adoptNode(replacement));
      }
    } catch (error) {
      const stamp = document.getElementById("stamp");
      if (stamp) stamp.classList.add("stale");
    } finally {
      busy = false;
    }
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
})();
