import Testing

@Test func placeholderGraftCLITests() { #expect(Bool(true)) }
