-- Which producer a configured resource (a judge, an LM, an embedder, with its settings) last
-- produced, so a selection can read "the scores of the judge configured now" explicitly and
-- without loading the model; registered_at moves on every scoring run, unlike
-- producers.created_at, so switching from judge A to B and back reads A again.
CREATE TABLE IF NOT EXISTS resource_producers (
    resource        VARCHAR NOT NULL,      -- e.g. ask_llm:<hash of the resource's result-changing config>
    producer_id     VARCHAR NOT NULL,
    registered_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (resource)
);
