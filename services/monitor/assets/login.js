// Sign-in page: a link of the form /login#token=<token> (the launcher prints one) signs
// in at once. The fragment never leaves the browser; it is removed from the address bar
// and history before the form is posted.
(function () {
  'use strict';
  var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash || '');
  if (!match) {
    return;
  }
  var token = decodeURIComponent(match[1]);
  window.history.replaceState(null, '', window.location.pathname);
  var field = document.getElementById('token');
  var form = document.getElementById('login-form');
  if (field && form && token) {
    field.value = token;
    form.submit();
  }
})();
