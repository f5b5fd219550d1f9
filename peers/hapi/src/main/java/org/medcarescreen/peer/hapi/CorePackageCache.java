package org.medcarescreen.peer.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import org.hl7.fhir.r4.model.StructureDefinition;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;

/**
 * Seeds the FHIR package cache ({@code <user.home>/.fhir/packages}) with the R4 core package,
 * {@code hl7.fhir.r4.core#4.0.1}, made from the R4 definitions HAPI already ships
 * (hapi-fhir-validation-resources-r4, read through {@link DefaultProfileValidationSupport}).
 *
 * <p>Why: when HAPI's instance validator checks a StructureDefinition that someone uploads (our
 * extension and ResearchSubject profiles), it generates the snapshot and resolves the extension
 * context through the core <em>package</em>, which it loads from the package cache or else
 * downloads from packages.fhir.org. A test machine has no internet, so every upload failed with
 * "Unable to resolve package id hl7.fhir.r4.core#null". With the package in the cache, uploads
 * validate and snapshots are generated offline, as on a connected server.
 *
 * <p>{@code ./run} points {@code user.home} at {@code target/home}, so the peer never writes
 * into the real home directory. Written once; later starts find it and return at once.
 */
final class CorePackageCache {

	static final String PACKAGE = "hl7.fhir.r4.core";

	static final String VERSION = "4.0.1";

	private CorePackageCache() {}

	static void ensure() throws IOException {
		Path cache = Path.of(System.getProperty("user.home"), ".fhir", "packages");
		Path folder = cache.resolve(PACKAGE + "#" + VERSION);
		if (Files.isRegularFile(folder.resolve("package").resolve(".index.json"))) {
			return;
		}
		Files.createDirectories(cache);
		// Written beside the cache and moved in whole: a peer killed half-way leaves no half package.
		Path staging = Files.createTempDirectory(cache, "staging-");
		Path pkg = Files.createDirectories(staging.resolve("package"));

		FhirContext ctx = FhirContext.forR4Cached();
		List<String> index = new ArrayList<>();
		for (Object resource : new DefaultProfileValidationSupport(ctx).fetchAllStructureDefinitions()) {
			StructureDefinition sd = (StructureDefinition) resource;
			String file = "StructureDefinition-" + sd.getIdElement().getIdPart() + ".json";
			Files.writeString(pkg.resolve(file), ctx.newJsonParser().encodeResourceToString(sd),
					StandardCharsets.UTF_8);
			index.add(String.format(
					"{\"filename\":%s,\"resourceType\":\"StructureDefinition\",\"id\":%s,\"url\":%s,"
							+ "\"version\":%s,\"kind\":%s,\"type\":%s}",
					quote(file), quote(sd.getIdElement().getIdPart()), quote(sd.getUrl()),
					quote(sd.getVersion()), quote(sd.getKind() == null ? null : sd.getKind().toCode()),
					quote(sd.getType())));
		}
		Files.writeString(pkg.resolve("package.json"), "{\"name\":\"" + PACKAGE + "\",\"version\":\""
				+ VERSION + "\",\"type\":\"Core\",\"fhirVersions\":[\"" + VERSION + "\"],"
				+ "\"canonical\":\"http://hl7.org/fhir\",\"url\":\"http://hl7.org/fhir/R4\","
				+ "\"dependencies\":{}}", StandardCharsets.UTF_8);
		Files.writeString(pkg.resolve(".index.json"),
				"{\"index-version\":1,\"files\":[" + String.join(",", index) + "]}", StandardCharsets.UTF_8);
		try {
			Files.move(staging, folder, StandardCopyOption.ATOMIC_MOVE);
		} catch (IOException raced) {
			// Another peer wrote it first: theirs is as good as ours.
			if (!Files.isDirectory(folder)) {
				throw raced;
			}
			try (var paths = Files.walk(staging)) {
				paths.sorted(java.util.Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
			}
		}
	}

	private static String quote(String value) {
		if (value == null) {
			return "null";
		}
		return "\"" + value.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
	}
}
