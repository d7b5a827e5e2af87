/* A shared library that is not a Medley adapter: it lacks the entry symbol. */
__attribute__((visibility("default"))) int medley_fixture_not_an_adapter(void) { return 42; }
