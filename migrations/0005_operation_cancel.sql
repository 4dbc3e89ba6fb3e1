-- 0005: cancelling operations. An operator's cancel of a *running* operation is a request the
-- operation honours at its next safe point (it cleans up, then ends `cancelled`); a queued
-- (`pending`) one is cancelled at once and its actor skips it.

ALTER TABLE toygres.operations
    ADD COLUMN cancel_requested_at timestamptz;
