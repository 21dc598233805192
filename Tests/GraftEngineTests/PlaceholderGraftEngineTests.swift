import Testing

@Test func placeholderGraftEngineTests() { #expect(Bool(true)) }
