// The seed's worker.js, with the ports from the environment like the Rust example.
var PORT = +process.env.PORT || 1337;
var REST_PORT = +process.env.REST_PORT || 1985;
var graceful = require('graceful');
var server = require('./app');
server.listen(PORT, '127.0.0.1');
console.log('[%s] [worker:%s] web server start listen on %s', new Date(), process.pid, PORT);

var restapi = require('http').createServer().listen(REST_PORT, '127.0.0.1');
console.log('[%s] [worker:%s] rest api start listen on %s', new Date(), process.pid, REST_PORT);

graceful({
  server: [server, restapi],
  killTimeout: +process.env.KILL_TIMEOUT_MS || 10000,
  error: function (err, throwErrorCount) {
    if (err.message) {
      err.message += ' (uncaughtException throw ' + throwErrorCount + ' times on pid:' + process.pid + ')';
    }
  }
});
