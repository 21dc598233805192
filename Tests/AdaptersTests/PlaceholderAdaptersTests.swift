import Testing

@Test func placeholderAdaptersTests() { #expect(Bool(true)) }
