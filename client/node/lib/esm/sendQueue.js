/**
 * Serialised sends on one ZeroMQ socket.
 *
 * zeromq.js allows one pending send() per socket (a second one fails with EBUSY), so every message of the
 * client goes through this queue, which awaits each send before starting the next.
 */
export class SendQueue {
    socket;
    items = [];
    head = 0;
    pumping = false;
    failure;
    constructor(socket) {
        this.socket = socket;
    }
    /** Resolves once ZeroMQ queued the message for the broker (not when the broker got it). */
    send(frames) {
        if (this.failure)
            return Promise.reject(this.failure);
        return new Promise((resolve, reject) => {
            this.items.push({ frames, resolve, reject });
            if (!this.pumping)
                void this.pump();
        });
    }
    /** Messages waiting for their turn. */
    get length() {
        return this.items.length - this.head;
    }
    /** Reject everything still queued, and every later send, with `err`. */
    fail(err) {
        this.failure = err;
        const waiting = this.items.splice(this.head);
        this.items.length = 0;
        this.head = 0;
        for (const item of waiting)
            item.reject(err);
    }
    async pump() {
        this.pumping = true;
        try {
            while (this.head < this.items.length) {
                const item = this.items[this.head++];
                try {
                    await this.socket.send(item.frames);
                    item.resolve();
                }
                catch (err) {
                    item.reject(this.failure ?? err);
                }
                if (this.head > 1024 && this.head * 2 > this.items.length) {
                    this.items.splice(0, this.head); // compact now and then instead of shift() per message
                    this.head = 0;
                }
            }
        }
        finally {
            this.pumping = false;
        }
    }
}
