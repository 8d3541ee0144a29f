// http: a GET of the target URL from the uplink's address; any 2xx or 3xx
// status is an answer (a redirect is not followed: the server has answered).
// Only the status line and headers are waited for; the body is not read.
// https certificates are verified: a captive portal or a middlebox that
// intercepts the connection is exactly what such a check should catch.
// A URL with a host name is resolved by the system resolver, which is not
// bound to the uplink: give addresses where that matters.

import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Probe } from './oneshot.js';

export const httpProbe: Probe = (target, from, _check, signal) =>
  new Promise<void>((resolve, reject) => {
    const url = new URL(target);
    const options: RequestOptions = {
      method: 'GET',
      localAddress: from.address,
      // A host name is resolved in the prober's family: each family judges its own path.
      family: from.family === 'ipv6' ? 6 : 4,
      // A fresh connection each time: a kept-alive one would not test the path anew.
      agent: false,
      headers: { 'user-agent': 'uplinkd-probe', connection: 'close' },
      signal,
    };
    const onResponse = (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      req.destroy();
      if (status >= 200 && status < 400) resolve();
      else reject(new Error(`HTTP ${status}`));
    };
    const req: ClientRequest = url.protocol === 'https:' ? httpsRequest(url, options, onResponse) : httpRequest(url, options, onResponse);
    req.once('error', reject);
    req.end();
  });
