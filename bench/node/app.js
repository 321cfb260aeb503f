// The seed's app.js.
var http = require('http');
var connect = require('connect');

var app = connect();
app.use(function (req, res, next) {
  req.on('end', function () {
    if (req.url === '/asycerror') {
      setTimeout(function () {
        foo.bar();
      }, 10);
      return;
    }
    process.nextTick(function () {
      res.setHeader('content-type', 'text/json');
      res.end(JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        Connection: res.getHeader('connection') || 'keep-alive',
        pid: process.pid,
      }));
    });
  });
  req.resume();
});
app.use(function (err, req, res, next) {
  var msg = 'domainThrown: ' + (err.domain_thrown || err.domainThrown) + '\n' + err.stack;
  console.error('%s %s\n%s', req.method, req.url, msg);
  res.statusCode = 500;
  res.setHeader('content-type', 'text/plain');
  res.end(msg + '\n');
});

module.exports = http.createServer(app);
