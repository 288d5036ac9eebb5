// firetower.mjs: the ES module form of firetower.js.
//
//   import {connect} from '/firetower.mjs';
//   const ft = connect('/ws');
//
// The client is implemented once, in firetower.js; importing it runs it and
// defines globalThis.firetower, which this module re-exports.
import './firetower.js';

const firetower = globalThis.firetower;

export const connect = firetower.connect;
export const Client = firetower.Client;
export const FiretowerError = firetower.FiretowerError;
export const version = firetower.version;
export default firetower;
