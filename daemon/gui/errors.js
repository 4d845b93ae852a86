// Loaded first, as a classic script: collects what the page's scripts throw or log as
// errors in window.__peerfoldErrors (the browser tests fail on any).
(function () {
  var list = (window.__peerfoldErrors = []);
  window.addEventListener('error', function (e) {
    // Resource load failures (an <img>) have no message; they are not script errors.
    if (e.message) list.push(e.message + (e.filename ? ' (' + e.filename + ':' + e.lineno + ')' : ''));
  });
  window.addEventListener('unhandledrejection', function (e) {
    var r = e.reason;
    list.push('unhandled rejection: ' + (r && r.stack ? r.stack : String(r)));
  });
  var original = console.error;
  console.error = function () {
    list.push(Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
})();
