"use strict";
/** Public shapes of the Node client: options, results, and the broker's views as they come off the wire. */
Object.defineProperty(exports, "__esModule", { value: true });
