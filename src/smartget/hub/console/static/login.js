// The sign-in link that `smartget demo --keep` prints: /login#token=TOKEN. A fragment
// never leaves the browser (no server log, no Referer); it is cleared from the address
// bar before the form is sent, as an ordinary sign-in.
function signInFromLink() {
  const form = document.querySelector("form");
  const match = /^#token=(.+)$/.exec(location.hash);
  if (form && match) {
    history.replaceState(null, "", location.pathname);
    form.elements.token.value = decodeURIComponent(match[1]);
    form.requestSubmit();
  }
}
window.addEventListener("hashchange", signInFromLink);
signInFromLink();
